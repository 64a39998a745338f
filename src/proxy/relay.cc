// The TCP<->TCP relay. See relay.h for the states.
#include "ringtunnel/proxy/relay.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>
#include <utility>

#include <fmt/format.h>

#include "ringtunnel/net/socket.h"
#include "ringtunnel/ring/ring.h"

namespace ringtunnel::proxy {

void Relay::open(int client_fd, const TcpTarget& to, const stats::TrafficLabels* labels) {
  state_ = State::connecting;
  listener_ = to.listener;
  target_text_ = to.target_text;
  target_ = to.target;
  legs_[kClient].fd = client_fd;
  start_ns_ = ctx_.now();
  start_unix_ms_ = unix_ms();

  socklen_t len = sizeof client_;
  getpeername(client_fd, &client_.sa, &len);
  net::tune_relay_socket(client_fd);
  if (labels) {
    traffic_.open(ctx_, *labels);
  } else {
    net::Endpoint client;
    memcpy(&client.storage, &client_, sizeof client_);
    client.length = len;
    traffic_.open(ctx_, outbound_labels(ctx_, workload_at(ctx_, client), workload_at(ctx_, target_),
                                        nullptr, false));
  }

  const int target_fd = net::stream_socket_for(target_, ctx_.config.mark, ctx_.config.keepalive());
  if (target_fd < 0) return end(EndReason::connect_error);
  legs_[kTarget].fd = target_fd;
  if (ctx_.config.tcp_splice && !open_pipes()) return end(EndReason::error);
  adopt_fixed();
  legs_[kTarget].connect(ctx_, ops_, target_);
}

bool Relay::open_pipes() {
  for (Direction& d : dirs_) {
    int p[2];
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0) return false;
    d.pipe_r = p[0];
    d.pipe_w = p[1];
    // Best effort: a smaller pipe still works, it only moves less per splice.
    int size = fcntl(d.pipe_w, F_SETPIPE_SZ, int(ctx_.config.splice_pipe_size));
    if (size < 0) size = fcntl(d.pipe_w, F_GETPIPE_SZ);
    d.pipe_size = uint32_t(size > 0 ? size : 4096);
  }
  return true;
}

// Moves the relay's two sockets into the ring's file table, at slots 2*index and 2*index+1, and
// closes their fds. Returns false (the relay keeps its fds) where the table has no room.
bool Relay::adopt_fixed() {
  const unsigned first = 2 * slot.index;
  if (!ctx_.features().fixed_files || first + 1 >= ctx_.features().file_slots) return false;
  const int fds[2] = {legs_[kClient].fd, legs_[kTarget].fd};
  if (!ctx_.update_files(first, fds)) return false;
  for (int fd : fds)
    io_uring_prep_close(ops_.sqe(ctx_, Op::close), fd);
  for (uint8_t side : {kClient, kTarget}) {
    legs_[side].fd = int(first + side);
    legs_[side].fixed = true;
  }
  return true;
}

void Relay::on_completion(Op op, uint8_t d, const io_uring_cqe& cqe) {
  ops_.completed(cqe);
  switch (op) {
    case Op::connect:
      on_connect(cqe.res);
      break;
    case Op::recv:
      on_recv(d, cqe);
      break;
    case Op::send:
      on_send(d, cqe.res);
      break;
    case Op::shutdown:
      on_shutdown(d);
      break;
    case Op::splice_in:
      on_splice_in(d, cqe.res);
      break;
    case Op::splice_out:
      on_splice_out(d, cqe.res);
      break;
    case Op::poll:
      if (cqe.res < 0 && cqe.res != -ECANCELED && state_ == State::relaying) end(EndReason::error);
      break;
    case Op::connect_timeout:
    case Op::cancel:
    case Op::close:
      break;  // only their count matters
    case Op::none:
    case Op::accept:
    case Op::wake:
      ctx_.unexpected("relay", op, cqe.res);
      break;
  }
  if (state_ == State::ending || state_ == State::closing) maybe_release();
}

void Relay::on_connect(int res) {
  if (state_ != State::connecting) return;
  if (res != 0) return end(connect_end(res));
  state_ = State::relaying;
  schedule(kUp);
  schedule(kDown);
}

void Relay::unstarve(uint8_t d) {
  legs_[d].starved = false;
  schedule(d);
}

void Relay::schedule(uint8_t d) {
  Direction& dir = dirs_[d];
  if (dir.scheduled) return;
  dir.scheduled = true;
  ctx_.schedule(Owner::relay, slot, d);
}

void Relay::service(uint8_t d) {
  Direction& dir = dirs_[d];
  dir.scheduled = false;
  if (state_ != State::relaying) return;
  if (ctx_.config.tcp_splice) return service_splice(d);
  const bool queued = dir.queue && dir.queue->count;
  const bool sending = dir.send != SendState::idle;
  if (queued && !sending) submit_send(d);
  if (!queued && !sending && dir.fin == Fin::received) submit_shutdown(d);
  // Below half the quota, so a paused direction resumes with room for a few reads.
  TcpLeg& from = legs_[d];
  if (from.recv == RecvState::off && dir.fin == Fin::open && !from.starved &&
      dir.queued < ctx_.config.max_queued / 2 && !from.arm_recv(ctx_, ops_, d, ctx_.pool))
    ctx_.wait_for_buffers(Owner::relay, slot, d);
}

void Relay::on_recv(uint8_t d, const io_uring_cqe& cqe) {
  Direction& dir = dirs_[d];
  TcpLeg& from = legs_[d];
  const std::optional<uint16_t> bid = from.on_recv(ctx_.pool, cqe);
  if (bid) {
    if (cqe.res <= 0 || state_ != State::relaying) {
      ctx_.pool.give_back(from.armed_cls, *bid);
    } else {
      if (!dir.queue) dir.queue = ctx_.queues.take();
      if (!dir.queue->count) dir.progress_ns = ctx_.loop_now;
      dir.queue->push({0, uint32_t(cqe.res), *bid, from.armed_cls});
      count(d, uint32_t(cqe.res));
      // Small reads never make the worker wait longer: request/response keeps its latency.
      ctx_.note_relay_read(uint32_t(cqe.res));
      dir.queued += uint32_t(cqe.res);
      from.kept(ctx_, ops_, d, size_t(cqe.res), dir.queued >= ctx_.config.max_queued,
                cqe.flags & IORING_CQE_F_MORE);
      schedule(d);
      return;
    }
  }
  if (state_ != State::relaying) return;
  if (cqe.res == 0) {
    dir.fin = Fin::received;
  } else if (cqe.res < 0 && cqe.res != -ENOBUFS && cqe.res != -ECANCELED) {
    return end(socket_end(cqe.res, sender(d)));
  }
  // -ENOBUFS: the class ran dry; service() re-arms from a class that has buffers, or waits.
  // -ECANCELED: our own cancel, to change class or to pause; service() decides which.
  schedule(d);
}

void Relay::submit_send(uint8_t d) {
  Direction& dir = dirs_[d];
  SendQueue& q = *dir.queue;
  const uint32_t n = std::min<uint32_t>(q.count, SendQueue::kMaxGather);
  bool registered = true;
  for (uint32_t i = 0; i < n; ++i) {
    const Chunk& c = q.at(i);
    uint8_t* const at = (c.heap ? c.heap : ctx_.pool.data(c.cls, c.bid)) + c.offset;
    // Heap copies are outside the registered buffer, and so are pool buffers added after the
    // registered buffer last grew (when registering it again failed).
    registered &= !c.heap && ctx_.pool.in_fixed(at, c.length);
    q.iov[i] = {at, c.length};
  }
  dir.in_flight = n;
  legs_[1 - d].send(ctx_, ops_, d, q.iov.data(), n, q.msg, registered);
  dir.send = SendState::in_flight;
  // On loopback a send completes inside the enter that submits it, so waiting for "one
  // completion" would return at once with only this send's, and the loop would need a second
  // enter to wait for new data. When the completion can only free buffers (the whole queue goes,
  // no FIN to pass on, the receive still armed, nobody waiting for buffers), the loop may wait for
  // it and one more event together.
  if (n == q.count && dir.fin == Fin::open && legs_[d].recv == RecvState::armed &&
      ctx_.starved[WorkerContext::list(Owner::relay)].empty())
    ++ctx_.quiet_sends;
}

void Relay::on_send(uint8_t d, int res) {
  Direction& dir = dirs_[d];
  const bool spill_now = dir.send == SendState::cancelling;
  dir.send = SendState::idle;
  dir.in_flight = 0;
  if (state_ != State::relaying) return;
  // Our own cancel (spill) before a byte went out: -ECANCELED if the send was still waiting,
  // -EINTR if the kernel was already running it (the cancel then says -EALREADY).
  if ((res == -ECANCELED || res == -EINTR) && spill_now) res = 0;
  if (res < 0 || (res == 0 && !spill_now)) return end(socket_end(res, receiver(d)));
  SendQueue& q = *dir.queue;
  auto left = uint32_t(res);
  dir.queued -= left;
  if (left) dir.progress_ns = ctx_.loop_now;
  while (left) {
    Chunk& c = q.at(0);
    if (left < c.length) {
      c.offset += left;
      c.length -= left;
      if (c.heap) ctx_.budgets.heap_sub(left);
      break;
    }
    left -= c.length;
    free_chunk(c);
    q.pop();
  }
  if (spill_now) spill_chunks(dir, 0);  // nothing is in flight now
  if (!q.count) {
    ctx_.queues.give(dir.queue);
    dir.queue = nullptr;
  }
  schedule(d);
}

// Nothing of direction d is queued or in flight.
bool Relay::idle(uint8_t d) const {
  const Direction& dir = dirs_[d];
  if (ctx_.config.tcp_splice)
    return !dir.in_pipe && dir.splice_in == Direction::SpliceIn::idle && !dir.splice_out_busy;
  return !(dir.queue && dir.queue->count) && dir.send == SendState::idle;
}

void Relay::submit_shutdown(uint8_t d) {
  // The relay's last FIN: the other way has passed its FIN, or read it with nothing left to send.
  // Both sockets have then been read to their EOF (nothing unread: a close sends a FIN, not a
  // reset), and closing them passes the FINs. A shutdown costs more than its syscall:
  // IORING_OP_SHUTDOWN always runs on one of the kernel's io-wq threads (a wake-up and two
  // context switches), where a close runs inline. Not for direct descriptors: before Linux 6.13
  // the ring drops such a file only once every older request on a direct descriptor has
  // finished (resource nodes are freed in order), so an idle relay's armed recv could hold the
  // FIN back for as long as that relay lives.
  const Direction& other = dirs_[1 - d];
  if (state_ == State::relaying && !legs_[kClient].fixed && !legs_[kTarget].fixed &&
      (other.fin == Fin::passed || (other.fin == Fin::received && idle(1 - d)))) {
    dirs_[d].fin = Fin::passed;
    return end(EndReason::closed);
  }
  dirs_[d].fin = Fin::passing;
  legs_[1 - d].shutdown(ctx_, ops_, d);
}

void Relay::on_shutdown(uint8_t d) {
  dirs_[d].fin = Fin::passed;
  if (state_ == State::relaying && dirs_[0].fin == Fin::passed && dirs_[1].fin == Fin::passed)
    end(EndReason::closed);
}

// --tcp-splice: source socket -> pipe -> destination socket, both splices through the ring. A poll
// linked before each inbound splice keeps an idle socket from holding a kernel worker thread.
void Relay::service_splice(uint8_t d) {
  Direction& dir = dirs_[d];
  const TcpLeg& from = legs_[d];
  const TcpLeg& to = legs_[1 - d];
  if (dir.fin == Fin::open && dir.splice_in == Direction::SpliceIn::idle &&
      dir.in_pipe < dir.pipe_size) {
    ctx_.reserve(2);
    io_uring_sqe* s = ops_.sqe(ctx_, Op::poll, d);
    io_uring_prep_poll_add(s, from.fd, POLLIN | POLLRDHUP);
    s->flags |= IOSQE_IO_LINK | from.fixed_flag();
    s = ops_.sqe(ctx_, Op::splice_in, d);
    io_uring_prep_splice(
        s, from.fd, -1, dir.pipe_w, -1, dir.pipe_size - dir.in_pipe,
        SPLICE_F_MOVE | SPLICE_F_NONBLOCK | (from.fixed ? SPLICE_F_FD_IN_FIXED : 0));
    dir.splice_in = Direction::SpliceIn::busy;
  }
  if (!dir.splice_out_busy && dir.in_pipe) {
    io_uring_sqe* s = ops_.sqe(ctx_, Op::splice_out, d);
    io_uring_prep_splice(s, dir.pipe_r, -1, to.fd, -1, dir.in_pipe, SPLICE_F_MOVE);
    s->flags |= to.fixed_flag();
    dir.splice_out_busy = true;
  }
  if (dir.fin == Fin::received && !dir.in_pipe && dir.splice_in == Direction::SpliceIn::idle &&
      !dir.splice_out_busy)
    submit_shutdown(d);
}

void Relay::on_splice_in(uint8_t d, int res) {
  Direction& dir = dirs_[d];
  dir.splice_in = Direction::SpliceIn::idle;
  if (state_ != State::relaying) return;
  if (res > 0) {
    dir.in_pipe += uint32_t(res);
    count(d, uint32_t(res));
  } else if (res == 0) {
    dir.fin = Fin::received;
  } else if (res == -EAGAIN && dir.in_pipe) {
    // The pipe has no free slot (a page per small segment fills it before pipe_size bytes):
    // wait for the outbound splice to drain it instead of polling again at once.
    dir.splice_in = Direction::SpliceIn::pipe_full;
    if (!dir.splice_out_busy) schedule(d);  // service() starts the outbound splice
    return;
  } else if (res != -EAGAIN && res != -ECANCELED) {
    return end(socket_end(res, sender(d)));
  }
  schedule(d);
}

void Relay::on_splice_out(uint8_t d, int res) {
  Direction& dir = dirs_[d];
  dir.splice_out_busy = false;
  if (state_ != State::relaying) return;
  if (res <= 0) return end(socket_end(res, receiver(d)));
  dir.in_pipe -= uint32_t(res);
  if (dir.splice_in == Direction::SpliceIn::pipe_full) dir.splice_in = Direction::SpliceIn::idle;
  schedule(d);
}

void Relay::end(EndReason reason) {
  if (state_ == State::free || state_ == State::ending || state_ == State::closing) return;
  state_ = State::ending;
  end_ = reason;
  reset_[kClient] = reason != EndReason::closed && reason != EndReason::client_reset;
  reset_[kTarget] =
      legs_[kTarget].fd >= 0 &&
      (reason == EndReason::client_reset || reason == EndReason::drain_timeout ||
       reason == EndReason::error || reason == EndReason::overload || reason == EndReason::denied);
  if (ops_.count) {
    // Every operation of this relay is on one of its sockets or, for splices, one of its pipes.
    for (TcpLeg& leg : legs_)
      if (leg.fd >= 0) leg.cancel_all(ctx_, ops_);
    for (const Direction& dir : dirs_)
      for (int fd : {dir.pipe_r, dir.pipe_w})
        if (fd >= 0)
          io_uring_prep_cancel_fd(ops_.sqe(ctx_, Op::cancel), fd, IORING_ASYNC_CANCEL_ALL);
  }
  maybe_release();
}

// Once no operation is left in flight: close everything, and when the closes are done, free the
// slot.
void Relay::maybe_release() {
  if (ops_.count) return;
  if (state_ == State::ending) {
    state_ = State::closing;
    for (uint8_t side : {kClient, kTarget})
      if (legs_[side].fd >= 0) legs_[side].close(ctx_, ops_, reset_[side]);
    for (Direction& dir : dirs_)
      for (int* fd : {&dir.pipe_r, &dir.pipe_w})
        if (*fd >= 0) io_uring_prep_close(ops_.sqe(ctx_, Op::close), std::exchange(*fd, -1));
    if (ops_.count) return;
  }
  release();
}

// Moves a stalled direction's queued bytes out of the receive pool (see dispatch.cc).
// Chunks that the send in flight points at cannot move while it is in flight: it is cancelled,
// and on_send moves them once it has completed (with what it sent, if anything).
bool Relay::spill(uint8_t d) {
  Direction& dir = dirs_[d];
  if (!dir.queue) return true;
  const bool sending = dir.send != SendState::idle;
  bool moved = spill_chunks(dir, sending ? dir.in_flight : 0);
  if (dir.send != SendState::in_flight) return moved;
  size_t in_pool = 0;  // what the send in flight holds of the pool
  for (uint32_t i = 0; i < dir.in_flight; ++i)
    if (!dir.queue->at(i).heap) in_pool += dir.queue->at(i).length;
  if (!in_pool) return moved;
  if (!ctx_.budgets.heap_fits(in_pool)) return false;
  dir.send = SendState::cancelling;
  io_uring_prep_cancel64(ops_.sqe(ctx_, Op::cancel, d), ops_.tag(Op::send, d), 0);
  return moved;
}

bool Relay::spill_chunks(Direction& dir, uint32_t from) {
  SendQueue& q = *dir.queue;
  bool moved = true;
  for (uint32_t i = from; i < q.count; ++i) {
    Chunk& c = q.at(i);
    if (c.heap) continue;
    if (!ctx_.budgets.heap_fits(c.length)) {
      moved = false;
      continue;
    }
    c.heap = new uint8_t[c.length];
    memcpy(c.heap, ctx_.pool.data(c.cls, c.bid) + c.offset, c.length);
    ctx_.pool.give_back(c.cls, c.bid);
    c.offset = 0;
    ctx_.budgets.heap_add(c.length);
  }
  return moved;
}

bool Relay::spill_stalled(uint64_t now, uint64_t stall_ns) {
  if (state_ != State::relaying) return true;
  bool moved = true;
  for (uint8_t d = 0; d < 2; ++d) {
    const Direction& dir = dirs_[d];
    if (dir.queue && dir.queue->count && now - dir.progress_ns >= stall_ns) moved &= spill(d);
  }
  return moved;
}

size_t Relay::stalled_pool_bytes(uint64_t now, uint64_t stall_ns) const {
  if (state_ != State::relaying) return 0;
  size_t held = 0;
  for (const Direction& dir : dirs_) {
    if (!dir.queue || now - dir.progress_ns < stall_ns) continue;
    for (uint32_t i = 0; i < dir.queue->count; ++i)
      if (!dir.queue->at(i).heap) held += dir.queue->at(i).length;
  }
  return held;
}

bool Relay::authorized_addresses(net::Endpoint& client, net::Endpoint& target) const {
  if (!authorized_ || state_ != State::relaying) return false;
  client = net::Endpoint{};
  memcpy(&client.storage, &client_, sizeof client_);
  client.length = client_.sa.sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  target = target_;
  return true;
}

std::string Relay::client_text() const {
  return net::format_sockaddr(&client_.sa, sizeof client_);
}

void Relay::free_chunk(const Chunk& c) {
  if (!c.heap) return ctx_.pool.give_back(c.cls, c.bid);
  ctx_.budgets.heap_sub(c.length);
  delete[] c.heap;
}

void Relay::release() {
  for (Direction& dir : dirs_) {
    if (!dir.queue) continue;
    for (uint32_t i = 0; i < dir.queue->count; ++i)
      free_chunk(dir.queue->at(i));
    ctx_.queues.give(dir.queue);
    dir.queue = nullptr;
  }
  if (ctx_.access_enabled()) {
    const std::string client = client_text();
    std::string formatted;
    const std::string_view target =
        target_text_ ? std::string_view(*target_text_) : (formatted = target_.to_string());
    AccessRecord rec{*listener_,
                     client,
                     target,
                     dirs_[kUp].bytes,
                     dirs_[kDown].bytes,
                     (ctx_.now() - start_ns_) / 1'000'000,
                     end_,
                     start_unix_ms_,
                     {},
                     {}};
    // Only the relays of captured inbound plaintext are authorized (against the local
    // workload's policies): they report for the destination.
    if (authorized_) rec.direction = AccessRecord::Direction::inbound;
    ctx_.access(rec);
  }
  traffic_.close(ctx_, end_);
  ctx_.budgets.connection_released();
  state_ = State::free;
  ctx_.release(*this);
  ctx_.descriptor_freed();
}

}  // namespace ringtunnel::proxy
