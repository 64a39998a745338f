// The TCP<->TCP relay: the states of one client connection and its target connection.
//
//   connecting --connect ok--> relaying --both FINs passed on--> closing --> free
//        |                        |
//        +--refused/timeout-------+--reset/error/drain timeout--> closing (resets sent)
//
// Each direction reads into provided buffers, queues what it read, and sends all of it in one
// gathered send when no send is in flight. service() looks at a direction's state once per loop
// iteration and submits whatever it needs next, so every completion handler only updates state.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include <fmt/format.h>

#include "ringtunnel/net/socket.h"
#include "ringtunnel/proxy/worker.h"

namespace ringtunnel::proxy {

void SendQueue::push(const Chunk& c) {
  if (count == chunks.size()) {
    // Completions already in flight when a pause was asked for can overfill the ring; never drop.
    std::vector<Chunk> grown(chunks.size() * 2);
    for (uint32_t i = 0; i < count; ++i)
      grown[i] = at(i);
    chunks.swap(grown);
    head = 0;
  }
  chunks[(head + count) % chunks.size()] = c;
  ++count;
}

// Moves the relay's two sockets into the ring's file table, at slots 2*index and 2*index+1, and
// closes their fds. Returns false (the relay keeps its fds) where the table has no room.
bool Worker::adopt_fixed(Relay& r) {
  const unsigned slot = 2 * r.index;
  if (!ring_.features().fixed_files || slot + 1 >= ring_.features().file_slots) return false;
  if (io_uring_register_files_update(ring_.raw(), slot, r.fds.data(), 2) != 2) return false;
  for (int fd : r.fds) {
    io_uring_sqe* s = relay_sqe(r, OpKind::close, 0);
    io_uring_prep_close(s, fd);
  }
  r.fds = {int(slot), int(slot + 1)};
  r.fixed = true;
  return true;
}

SendQueue* Worker::take_queue() {
  if (spare_queues_.empty()) return new SendQueue;
  SendQueue* q = spare_queues_.back().release();
  spare_queues_.pop_back();
  return q;
}

void Worker::return_queue(SendQueue* q) {
  q->head = q->count = 0;
  spare_queues_.emplace_back(q);
}

io_uring_sqe* Worker::relay_sqe(Relay& r, OpKind kind, uint8_t dir) {
  io_uring_sqe* s = ring_.sqe();
  io_uring_sqe_set_data64(s, ring::encode({uint8_t(kind), dir, r.index, r.generation}));
  ++r.pending;
  return s;
}

void Worker::open_relay(int client_fd, uint16_t route_index) {
  Relay* slot = relays_.acquire();
  if (!slot) {
    log_line(fmt::format("ringtunnel: worker {}: {} connections open, refusing another", id_,
                         relays_.live()));
    net::arm_reset_on_close(client_fd);
    close(client_fd);
    --accepted_live_;
    return;
  }
  Relay& r = *slot;
  r.state = RelayState::connecting;
  r.route = route_index;
  r.fds[Relay::kClient] = client_fd;
  r.start_ns = monotonic_ns();
  r.start_unix_ms = unix_ms();

  socklen_t len = sizeof r.client;
  getpeername(client_fd, &r.client.sa, &len);
  net::tune_relay_socket(client_fd);

  const config::Route& route = config_.routes[route_index];
  const int target_fd = net::stream_socket_for(route.target);
  if (target_fd < 0) {
    end_relay(r, EndReason::connect_error);
    return;
  }
  r.fds[Relay::kTarget] = target_fd;
  if (config_.tcp_splice) {
    for (Direction& d : r.dirs) {
      int p[2];
      if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0) {
        end_relay(r, EndReason::error);
        return;
      }
      d.pipe_r = p[0];
      d.pipe_w = p[1];
      // Best effort: a smaller pipe still works, it only moves less per splice.
      int size = fcntl(d.pipe_w, F_SETPIPE_SZ, int(config_.splice_pipe_size));
      if (size < 0) size = fcntl(d.pipe_w, F_GETPIPE_SZ);
      d.pipe_size = uint32_t(size > 0 ? size : 4096);
    }
  }
  adopt_fixed(r);
  ring_.reserve(2);
  io_uring_sqe* s = relay_sqe(r, OpKind::connect, 0);
  io_uring_prep_connect(s, r.fds[Relay::kTarget], route.target.addr(), route.target.length);
  if (r.fixed) s->flags |= IOSQE_FIXED_FILE;
  s->flags |= IOSQE_IO_LINK;
  s = relay_sqe(r, OpKind::connect_timeout, 0);
  io_uring_prep_link_timeout(s, &connect_timeout_, 0);
}

void Worker::on_relay_completion(Relay& r, OpKind kind, uint8_t d, const io_uring_cqe& cqe) {
  if (!(cqe.flags & IORING_CQE_F_MORE)) --r.pending;
  switch (kind) {
    case OpKind::connect:
      on_connect(r, cqe.res);
      break;
    case OpKind::recv:
      on_recv(r, d, cqe);
      break;
    case OpKind::send:
      on_send(r, d, cqe.res);
      break;
    case OpKind::shutdown:
      on_shutdown(r, d);
      break;
    case OpKind::splice_in:
      on_splice_in(r, d, cqe.res);
      break;
    case OpKind::splice_out:
      on_splice_out(r, d, cqe.res);
      break;
    case OpKind::poll:
      if (cqe.res < 0 && cqe.res != -ECANCELED && r.state == RelayState::relaying)
        end_relay(r, EndReason::error);
      break;
    default:
      break;  // connect_timeout, cancel, close: only their count matters
  }
  if (r.state == RelayState::closing) maybe_release(r);
}

void Worker::on_connect(Relay& r, int res) {
  if (r.state != RelayState::connecting) return;
  if (res == 0) {
    r.state = RelayState::relaying;
    schedule(r, Relay::kUp);
    schedule(r, Relay::kDown);
    return;
  }
  end_relay(r, res == -ECANCELED      ? EndReason::connect_timeout
               : res == -ECONNREFUSED ? EndReason::connect_refused
                                      : EndReason::connect_error);
}

void Worker::schedule(Relay& r, uint8_t d) {
  Direction& dir = r.dirs[d];
  if (dir.scheduled) return;
  dir.scheduled = true;
  todo_.push_back({r.index, r.generation, d});
}

void Worker::service(Relay& r, uint8_t d) {
  Direction& dir = r.dirs[d];
  dir.scheduled = false;
  if (r.state != RelayState::relaying) return;
  if (config_.tcp_splice) return service_splice(r, d);
  const bool queued = dir.queue && dir.queue->count;
  if (queued && !dir.sending) submit_send(r, d);
  if (!queued && !dir.sending && dir.eof && !dir.shut) submit_shutdown(r, d);
  // Below half the quota, so a paused direction resumes with room for a few reads.
  if (dir.recv == RecvState::off && !dir.eof && !dir.starved && dir.queued < config_.max_queued / 2)
    arm_recv(r, d);
}

void Worker::arm_recv(Relay& r, uint8_t d) {
  Direction& dir = r.dirs[d];
  const int cls = pool_.class_for(dir.policy.cls);
  if (cls < 0) {
    dir.starved = true;
    starved_.push_back({r.index, r.generation, d});
    return;
  }
  dir.armed_cls = uint8_t(cls);
  dir.recv = RecvState::armed;
  io_uring_sqe* s = relay_sqe(r, OpKind::recv, d);
  ring_.prep_buffer_recv(s, r.fds[d], pool_.group(dir.armed_cls));
  if (r.fixed) s->flags |= IOSQE_FIXED_FILE;
}

void Worker::on_recv(Relay& r, uint8_t d, const io_uring_cqe& cqe) {
  Direction& dir = r.dirs[d];
  const bool more = cqe.flags & IORING_CQE_F_MORE;
  if (!more) dir.recv = RecvState::off;
  if (cqe.flags & IORING_CQE_F_BUFFER) {
    const auto bid = uint16_t(cqe.flags >> IORING_CQE_BUFFER_SHIFT);
    pool_.taken(dir.armed_cls);
    if (cqe.res <= 0 || r.state != RelayState::relaying) {
      pool_.give_back(dir.armed_cls, bid);
    } else {
      if (!dir.queue) dir.queue = take_queue();
      if (!dir.queue->count) dir.progress_ns = now_ns_;
      dir.queue->push({0, uint32_t(cqe.res), bid, dir.armed_cls});
      dir.bytes += uint32_t(cqe.res);
      dir.queued += uint32_t(cqe.res);
      const bool class_changed =
          dir.policy.on_read(size_t(cqe.res), dir.armed_cls, config_.buffer_sizes);
      if (more && dir.recv == RecvState::armed &&
          (class_changed || dir.queued >= config_.max_queued)) {
        io_uring_sqe* s = relay_sqe(r, OpKind::cancel, d);
        io_uring_prep_cancel64(s, ring::encode({uint8_t(OpKind::recv), d, r.index, r.generation}),
                               0);
        dir.recv = RecvState::cancelling;
      }
      schedule(r, d);
      return;
    }
  }
  if (r.state != RelayState::relaying) return;
  if (cqe.res == 0) {
    dir.eof = true;
  } else if (cqe.res < 0 && cqe.res != -ENOBUFS && cqe.res != -ECANCELED) {
    return end_relay(r, is_reset(-cqe.res)
                            ? (d == Relay::kUp ? EndReason::client_reset : EndReason::target_reset)
                            : EndReason::error);
  }
  // -ENOBUFS: the class ran dry; service() re-arms from a class that has buffers, or waits.
  // -ECANCELED: our own cancel, to change class or to pause; service() decides which.
  schedule(r, d);
}

void Worker::submit_send(Relay& r, uint8_t d) {
  Direction& dir = r.dirs[d];
  SendQueue& q = *dir.queue;
  const uint32_t n = std::min<uint32_t>(q.count, SendQueue::kMaxGather);
  bool heap = false;
  for (uint32_t i = 0; i < n; ++i) {
    const Chunk& c = q.at(i);
    heap |= c.heap != nullptr;
    q.iov[i] = {(c.heap ? c.heap : pool_.data(c.cls, c.bid)) + c.offset, c.length};
  }
  const int to = r.fds[1 - d];
  io_uring_sqe* s = relay_sqe(r, OpKind::send, d);
  dir.in_flight = n;
  if (ring_.features().writev_fixed && !heap) {  // heap copies are outside the registered buffer
    io_uring_prep_rw(ring::kOpWritevFixed, s, to, q.iov.data(), n, 0);
    s->buf_index = 0;
  } else {
    ring::prep_gathered_send(s, to, q.msg, q.iov.data(), n);
  }
  if (r.fixed) s->flags |= IOSQE_FIXED_FILE;
  dir.sending = true;
  // On loopback a send completes inside the enter that submits it, so waiting for "one
  // completion" would return at once with only this send's, and the loop would need a second
  // enter to wait for new data. When the completion can only free buffers (the whole queue goes,
  // no FIN to pass on, the receive still armed, nobody waiting for buffers), the loop may wait for
  // it and one more event together.
  if (n == q.count && !dir.eof && dir.recv == RecvState::armed && starved_.empty()) ++quiet_sends_;
}

void Worker::on_send(Relay& r, uint8_t d, int res) {
  Direction& dir = r.dirs[d];
  dir.sending = false;
  dir.in_flight = 0;
  const bool spill_now = dir.send_cancelled;
  dir.send_cancelled = false;
  if (r.state != RelayState::relaying) return;
  // Our own cancel (spill) before a byte went out: -ECANCELED if the send was still waiting,
  // -EINTR if the kernel was already running it (the cancel then says -EALREADY).
  if ((res == -ECANCELED || res == -EINTR) && spill_now) res = 0;
  if (res < 0 || (res == 0 && !spill_now)) {
    // The receiving side of this direction is the far end: d == up sends to the target.
    return end_relay(r, res < 0 && is_reset(-res)
                            ? (d == Relay::kUp ? EndReason::target_reset : EndReason::client_reset)
                            : EndReason::error);
  }
  SendQueue& q = *dir.queue;
  auto left = uint32_t(res);
  dir.queued -= left;
  if (left) dir.progress_ns = now_ns_;
  while (left) {
    Chunk& c = q.at(0);
    if (left < c.length) {
      c.offset += left;
      c.length -= left;
      if (c.heap) heap_bytes_ -= left;
      break;
    }
    left -= c.length;
    free_chunk(c);
    q.pop();
  }
  if (spill_now) spill_chunks(dir, 0);  // nothing is in flight now
  if (!q.count) {
    return_queue(dir.queue);
    dir.queue = nullptr;
  }
  schedule(r, d);
}

void Worker::submit_shutdown(Relay& r, uint8_t d) {
  r.dirs[d].shut = true;
  io_uring_sqe* s = relay_sqe(r, OpKind::shutdown, d);
  io_uring_prep_shutdown(s, r.fds[1 - d], SHUT_WR);
  if (r.fixed) s->flags |= IOSQE_FIXED_FILE;
}

void Worker::on_shutdown(Relay& r, uint8_t d) {
  r.dirs[d].shut_done = true;
  if (r.state == RelayState::relaying && r.dirs[0].shut_done && r.dirs[1].shut_done)
    end_relay(r, EndReason::closed);
}

// --tcp-splice: source socket -> pipe -> destination socket, both splices through the ring. A poll
// linked before each inbound splice keeps an idle socket from holding a kernel worker thread.
void Worker::service_splice(Relay& r, uint8_t d) {
  Direction& dir = r.dirs[d];
  const int from = r.fds[d], to = r.fds[1 - d];
  if (!dir.eof && !dir.splice_in_busy && !dir.pipe_full && dir.in_pipe < dir.pipe_size) {
    ring_.reserve(2);
    io_uring_sqe* s = relay_sqe(r, OpKind::poll, d);
    io_uring_prep_poll_add(s, from, POLLIN | POLLRDHUP);
    s->flags |= IOSQE_IO_LINK | (r.fixed ? IOSQE_FIXED_FILE : 0);
    s = relay_sqe(r, OpKind::splice_in, d);
    io_uring_prep_splice(s, from, -1, dir.pipe_w, -1, dir.pipe_size - dir.in_pipe,
                         SPLICE_F_MOVE | SPLICE_F_NONBLOCK | (r.fixed ? SPLICE_F_FD_IN_FIXED : 0));
    dir.splice_in_busy = true;
  }
  if (!dir.splice_out_busy && dir.in_pipe) {
    io_uring_sqe* s = relay_sqe(r, OpKind::splice_out, d);
    io_uring_prep_splice(s, dir.pipe_r, -1, to, -1, dir.in_pipe, SPLICE_F_MOVE);
    if (r.fixed) s->flags |= IOSQE_FIXED_FILE;
    dir.splice_out_busy = true;
  }
  if (dir.eof && !dir.in_pipe && !dir.splice_in_busy && !dir.splice_out_busy && !dir.shut)
    submit_shutdown(r, d);
}

void Worker::on_splice_in(Relay& r, uint8_t d, int res) {
  Direction& dir = r.dirs[d];
  dir.splice_in_busy = false;
  if (r.state != RelayState::relaying) return;
  if (res > 0) {
    dir.in_pipe += uint32_t(res);
    dir.bytes += uint32_t(res);
  } else if (res == 0) {
    dir.eof = true;
  } else if (res == -EAGAIN && dir.in_pipe) {
    // The pipe has no free slot (a page per small segment fills it before pipe_size bytes):
    // wait for the outbound splice to drain it instead of polling again at once.
    dir.pipe_full = true;
    if (!dir.splice_out_busy) schedule(r, d);  // service() starts the outbound splice
    return;
  } else if (res != -EAGAIN && res != -ECANCELED) {
    return end_relay(r, is_reset(-res)
                            ? (d == Relay::kUp ? EndReason::client_reset : EndReason::target_reset)
                            : EndReason::error);
  }
  schedule(r, d);
}

void Worker::on_splice_out(Relay& r, uint8_t d, int res) {
  Direction& dir = r.dirs[d];
  dir.splice_out_busy = false;
  if (r.state != RelayState::relaying) return;
  if (res <= 0)
    return end_relay(r, res < 0 && is_reset(-res)
                            ? (d == Relay::kUp ? EndReason::target_reset : EndReason::client_reset)
                            : EndReason::error);
  dir.in_pipe -= uint32_t(res);
  dir.pipe_full = false;
  schedule(r, d);
}

void Worker::end_relay(Relay& r, EndReason reason) {
  if (r.state == RelayState::closing || r.state == RelayState::free) return;
  r.state = RelayState::closing;
  r.end = reason;
  r.reset_client = reason != EndReason::closed && reason != EndReason::client_reset;
  r.reset_target = r.fds[Relay::kTarget] >= 0 &&
                   (reason == EndReason::client_reset || reason == EndReason::drain_timeout ||
                    reason == EndReason::error || reason == EndReason::overload);
  if (r.pending) {
    // Every operation of this relay is on one of its sockets or, for splices, one of its pipes.
    for (int side : {Relay::kClient, Relay::kTarget}) {
      if (r.fds[side] < 0) continue;
      io_uring_sqe* s = relay_sqe(r, OpKind::cancel, 0);
      io_uring_prep_cancel_fd(
          s, r.fds[side], IORING_ASYNC_CANCEL_ALL | (r.fixed ? IORING_ASYNC_CANCEL_FD_FIXED : 0));
    }
    for (const Direction& dir : r.dirs)
      for (int fd : {dir.pipe_r, dir.pipe_w}) {
        if (fd < 0) continue;
        io_uring_sqe* s = relay_sqe(r, OpKind::cancel, 0);
        io_uring_prep_cancel_fd(s, fd, IORING_ASYNC_CANCEL_ALL);
      }
  }
  maybe_release(r);
}

// Once no operation is left in flight: close everything (a socket to be reset gets SO_LINGER 0
// first), and when the closes are done, free the slot.
void Worker::maybe_release(Relay& r) {
  if (r.pending) return;
  if (!r.closes_sent) {
    r.closes_sent = true;
    static const linger kReset{1, 0};
    for (int side : {Relay::kClient, Relay::kTarget}) {
      const int fd = r.fds[side];
      if (fd < 0) continue;
      const bool reset = side == Relay::kClient ? r.reset_client : r.reset_target;
      if (!r.fixed) {
        if (reset) net::arm_reset_on_close(fd);
        io_uring_prep_close(relay_sqe(r, OpKind::close, 0), fd);
        continue;
      }
      ring_.reserve(2);
      if (reset) {
        io_uring_sqe* s = relay_sqe(r, OpKind::close, 0);
        ring::prep_setsockopt(s, fd, SOL_SOCKET, SO_LINGER, &kReset, sizeof kReset);
        s->flags |= IOSQE_FIXED_FILE | IOSQE_IO_HARDLINK;  // the close runs even if this fails
      }
      io_uring_prep_close_direct(relay_sqe(r, OpKind::close, 0), unsigned(fd));
    }
    for (const Direction& dir : r.dirs)
      for (int fd : {dir.pipe_r, dir.pipe_w})
        if (fd >= 0) io_uring_prep_close(relay_sqe(r, OpKind::close, 0), fd);
    if (r.pending) return;
  }
  release(r);
}

// Moves a stalled direction's queued bytes out of the receive pool (see relieve_pool_pressure).
// Chunks that the send in flight points at cannot move while it is in flight: it is cancelled,
// and on_send moves them once it has completed (with what it sent, if anything).
bool Worker::spill(Relay& r, uint8_t d) {
  Direction& dir = r.dirs[d];
  if (!dir.queue) return true;
  bool moved = spill_chunks(dir, dir.sending ? dir.in_flight : 0);
  if (!dir.sending || dir.send_cancelled) return moved;
  size_t in_pool = 0;  // what the send in flight holds of the pool
  for (uint32_t i = 0; i < dir.in_flight; ++i)
    if (!dir.queue->at(i).heap) in_pool += dir.queue->at(i).length;
  if (!in_pool) return moved;
  if (heap_bytes_ + in_pool > config_.memory_budget) return false;
  dir.send_cancelled = true;
  io_uring_prep_cancel64(relay_sqe(r, OpKind::cancel, d),
                         ring::encode({uint8_t(OpKind::send), d, r.index, r.generation}), 0);
  return moved;
}

bool Worker::spill_chunks(Direction& dir, uint32_t from) {
  SendQueue& q = *dir.queue;
  bool moved = true;
  for (uint32_t i = from; i < q.count; ++i) {
    Chunk& c = q.at(i);
    if (c.heap) continue;
    if (heap_bytes_ + c.length > config_.memory_budget) {
      moved = false;
      continue;
    }
    c.heap = new uint8_t[c.length];
    memcpy(c.heap, pool_.data(c.cls, c.bid) + c.offset, c.length);
    pool_.give_back(c.cls, c.bid);
    c.offset = 0;
    heap_bytes_ += c.length;
  }
  return moved;
}

void Worker::free_chunk(const Chunk& c) {
  if (!c.heap) return pool_.give_back(c.cls, c.bid);
  heap_bytes_ -= c.length;
  delete[] c.heap;
}

void Worker::release(Relay& r) {
  for (Direction& dir : r.dirs) {
    if (!dir.queue) continue;
    for (uint32_t i = 0; i < dir.queue->count; ++i)
      free_chunk(dir.queue->at(i));
    return_queue(dir.queue);
    dir.queue = nullptr;
  }
  if (log_.enabled()) {
    const config::Route& route = config_.routes[r.route];
    const std::string client = net::format_sockaddr(&r.client.sa, sizeof r.client);
    append_access_line(log_batch_, {route.listen_text,
                                    client,
                                    route.target_text,
                                    r.dirs[Relay::kUp].bytes,
                                    r.dirs[Relay::kDown].bytes,
                                    (monotonic_ns() - r.start_ns) / 1'000'000,
                                    r.end,
                                    r.start_unix_ms,
                                    {},
                                    {}});
  }
  --accepted_live_;
  r.state = RelayState::free;
  relays_.release(r);
  accept_blocked_ = false;
}

}  // namespace ringtunnel::proxy
