#include "fake_ring.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace ringtunnel::test {

namespace {

// Operations that have no file: a cancel keyed on an fd never matches them (the kernel compares
// the request's file).
bool has_file(const io_uring_sqe& s) {
  switch (s.opcode) {
    case IORING_OP_NOP:
    case IORING_OP_TIMEOUT:
    case IORING_OP_TIMEOUT_REMOVE:
    case IORING_OP_ASYNC_CANCEL:
    case IORING_OP_LINK_TIMEOUT:
    case IORING_OP_CLOSE:
    case IORING_OP_FILES_UPDATE:
    case IORING_OP_SOCKET:
    case IORING_OP_OPENAT:
      return false;
    default:
      return true;
  }
}

}  // namespace

io_uring_sqe* FakeSubmitter::sqe() {
  io_uring_sqe& s = sqes_.emplace_back();
  std::memset(&s, 0, sizeof s);
  done_.push_back(false);
  return &s;
}

bool FakeSubmitter::update_files(unsigned slot, std::span<const int> fds) {
  file_updates_.push_back({slot, std::vector<int>(fds.begin(), fds.end())});
  return update_files_ok_;
}

size_t FakeSubmitter::index_of(const io_uring_sqe* sqe) const {
  for (size_t i = 0; i < sqes_.size(); ++i)
    if (&sqes_[i] == sqe) return i;
  throw std::logic_error("FakeSubmitter: an SQE that did not come from this ring");
}

bool FakeSubmitter::is_open(const io_uring_sqe* sqe) const {
  return !done_[index_of(sqe)];
}

std::vector<io_uring_sqe*> FakeSubmitter::open() {
  std::vector<io_uring_sqe*> out;
  for (size_t i = 0; i < sqes_.size(); ++i)
    if (!done_[i]) out.push_back(&sqes_[i]);
  return out;
}

io_uring_sqe* FakeSubmitter::find(const std::function<bool(const io_uring_sqe&)>& pred) {
  for (size_t i = 0; i < sqes_.size(); ++i)
    if (!done_[i] && pred(sqes_[i])) return &sqes_[i];
  return nullptr;
}

io_uring_sqe* FakeSubmitter::find_op(uint8_t opcode) {
  return find([opcode](const io_uring_sqe& s) { return s.opcode == opcode; });
}

io_uring_sqe* FakeSubmitter::find_tag(uint64_t user_data) {
  return find([user_data](const io_uring_sqe& s) { return s.user_data == user_data; });
}

void FakeSubmitter::complete(io_uring_sqe* sqe, int res, unsigned flags) {
  const size_t i = index_of(sqe);
  if (done_[i]) throw std::logic_error("FakeSubmitter: completing an SQE that is not open");
  if (!(flags & IORING_CQE_F_MORE)) done_[i] = true;
  // A plain close (io_uring_prep_close_direct names a slot in file_index instead).
  if (sqe->opcode == IORING_OP_CLOSE && sqe->file_index == 0 && sqe->fd >= 0) ::close(sqe->fd);
  io_uring_cqe cqe{};
  cqe.user_data = sqe->user_data;
  cqe.res = res;
  cqe.flags = flags;
  cqes_.push_back(cqe);
  // The sink gets its own copy: it may complete more, which grows cqes_.
  if (sink_) sink_(cqe);
}

bool FakeSubmitter::cancel_matches(const io_uring_sqe& cancel, const io_uring_sqe& op) const {
  if (&op == &cancel || op.opcode == IORING_OP_ASYNC_CANCEL) return false;
  // A link timeout goes with the operation it is linked to (complete_cancel handles it there).
  if (op.opcode == IORING_OP_LINK_TIMEOUT) return false;
  const uint32_t flags = cancel.cancel_flags;
  if (flags & IORING_ASYNC_CANCEL_ANY) return true;
  if (flags & IORING_ASYNC_CANCEL_FD) {
    const bool fixed = flags & IORING_ASYNC_CANCEL_FD_FIXED;
    return has_file(op) && op.fd == cancel.fd && bool(op.flags & IOSQE_FIXED_FILE) == fixed;
  }
  return op.user_data == cancel.addr;
}

unsigned FakeSubmitter::complete_cancel(io_uring_sqe* cancel, CancelOrder order) {
  if (cancel->opcode != IORING_OP_ASYNC_CANCEL)
    throw std::logic_error("FakeSubmitter::complete_cancel: not an IORING_OP_ASYNC_CANCEL");
  if (!is_open(cancel)) throw std::logic_error("FakeSubmitter: completing a cancel not open");
  const bool all = cancel->cancel_flags & (IORING_ASYNC_CANCEL_ALL | IORING_ASYNC_CANCEL_ANY);
  // Chosen first, completed after: the completions' handlers may submit more.
  std::vector<size_t> matched;
  for (size_t i = 0; i < sqes_.size(); ++i) {
    if (done_[i] || !cancel_matches(*cancel, sqes_[i])) continue;
    matched.push_back(i);
    if (!all) break;
  }
  const auto n = unsigned(matched.size());
  const int res = all ? int(n) : (n ? 0 : -ENOENT);
  if (order == CancelOrder::cancel_first) complete(cancel, res);
  for (size_t i : matched) {
    if (done_[i]) continue;  // a handler completed it meanwhile
    const bool linked = (sqes_[i].flags & IOSQE_IO_LINK) && i + 1 < sqes_.size() &&
                        sqes_[i + 1].opcode == IORING_OP_LINK_TIMEOUT;
    complete(&sqes_[i], -ECANCELED);
    if (linked && !done_[i + 1]) complete(&sqes_[i + 1], -ECANCELED);
  }
  if (order == CancelOrder::cancelled_first) complete(cancel, res);
  return n;
}

unsigned FakeSubmitter::complete_cancel_fd(io_uring_sqe* cancel, CancelOrder order) {
  if (cancel->opcode != IORING_OP_ASYNC_CANCEL || !(cancel->cancel_flags & IORING_ASYNC_CANCEL_FD))
    throw std::logic_error("FakeSubmitter::complete_cancel_fd: not a cancel keyed on an fd");
  return complete_cancel(cancel, order);
}

void FakeSubmitter::complete_linked(io_uring_sqe* op, int res) {
  const size_t i = index_of(op);
  if (done_[i] || !(op->flags & IOSQE_IO_LINK) || i + 1 >= sqes_.size() ||
      sqes_[i + 1].opcode != IORING_OP_LINK_TIMEOUT || done_[i + 1])
    throw std::logic_error(
        "FakeSubmitter::complete_linked: not an open operation linked to an open link timeout");
  io_uring_sqe* timeout = &sqes_[i + 1];
  if (res == -ETIME) {
    complete(timeout, -ETIME);
    if (!done_[i]) complete(op, -ECANCELED);
  } else {
    complete(op, res);
    if (!done_[i + 1]) complete(timeout, -ECANCELED);
  }
}

KernelBuffers::KernelBuffers(FakeSubmitter& ring, std::initializer_list<ring::BufferPool*> pools)
    : ring_(ring) {
  for (ring::BufferPool* p : pools) {
    if (!p || !p->ready() || p->registered())
      throw std::logic_error("KernelBuffers: a pool must be ready and set up without a ring");
    pools_.push_back({p, {}});
  }
}

const KernelBuffers::Pool& KernelBuffers::find_pool(const ring::BufferPool& pool) const {
  for (const Pool& p : pools_)
    if (p.pool == &pool) return p;
  throw std::logic_error("KernelBuffers: a pool it was not given");
}

namespace {

uint16_t published_tail(const io_uring_buf_ring* br) {
  // The pool publishes with a release store (io_uring_buf_ring_advance); the kernel reads it so.
  return __atomic_load_n(&br->tail, __ATOMIC_ACQUIRE);
}

}  // namespace

uint32_t KernelBuffers::ready(const ring::BufferPool& pool, uint8_t cls) const {
  const Pool& p = find_pool(pool);
  return uint16_t(published_tail(pool.buf_ring(cls)) - p.head[cls]);
}

int KernelBuffers::recv(io_uring_sqe* sqe, std::string_view bytes, bool more) {
  if (!(sqe->flags & IOSQE_BUFFER_SELECT) ||
      (sqe->opcode != IORING_OP_RECV && sqe->opcode != IORING_OP_RECVMSG))
    throw std::logic_error("KernelBuffers::recv: not a receive with IOSQE_BUFFER_SELECT");
  if (!ring_.is_open(sqe)) throw std::logic_error("KernelBuffers::recv: the receive is not open");
  for (Pool& p : pools_) {
    const int cls = p.pool->class_of_group(sqe->buf_group);
    if (cls < 0) continue;
    const io_uring_buf_ring* br = p.pool->buf_ring(uint8_t(cls));
    uint16_t& head = p.head[size_t(cls)];
    if (published_tail(br) == head) {
      ring_.complete(sqe, -ENOBUFS);
      return -ENOBUFS;
    }
    const io_uring_buf& buf = br->bufs[head & (p.pool->count(uint8_t(cls)) - 1)];
    ++head;
    const size_t n = std::min<size_t>(bytes.size(), buf.len);
    std::memcpy(reinterpret_cast<void*>(uintptr_t(buf.addr)), bytes.data(), n);
    ring_.complete(sqe, int(n),
                   IORING_CQE_F_BUFFER | unsigned(buf.bid) << IORING_CQE_BUFFER_SHIFT |
                       (more ? IORING_CQE_F_MORE : 0));
    return int(n);
  }
  throw std::logic_error("KernelBuffers::recv: buf_group names none of its pools");
}

}  // namespace ringtunnel::test
