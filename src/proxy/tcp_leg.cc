#include "ringtunnel/proxy/tcp_leg.h"

#include <sys/socket.h>

#include "ringtunnel/net/socket.h"
#include "ringtunnel/ring/ring.h"

namespace ringtunnel::proxy {

bool TcpLeg::arm_recv(WorkerContext& ctx, PendingOps& ops, uint8_t lane, ring::BufferPool& pool) {
  const int cls = pool.class_for(policy.cls);
  if (cls < 0) {
    starved = true;
    return false;
  }
  armed_cls = uint8_t(cls);
  recv = RecvState::armed;
  io_uring_sqe* s = ops.sqe(ctx, Op::recv, lane);
  ring::prep_buffer_recv(s, fd, pool.group(armed_cls), ctx.features());
  s->flags |= fixed_flag();
  return true;
}

void TcpLeg::kept(WorkerContext& ctx, PendingOps& ops, uint8_t lane, size_t bytes, bool over_quota,
                  bool more) {
  const bool class_changed = policy.on_read(bytes, armed_cls, ctx.config.buffer_sizes);
  if (!more || recv != RecvState::armed || !(class_changed || over_quota)) return;
  io_uring_prep_cancel64(ops.sqe(ctx, Op::cancel, lane), ops.tag(Op::recv, lane), 0);
  recv = RecvState::cancelling;
}

void TcpLeg::send(WorkerContext& ctx, PendingOps& ops, uint8_t lane, iovec* iov, size_t n,
                  msghdr& msg, bool registered) {
  io_uring_sqe* s = ops.sqe(ctx, Op::send, lane);
  if (registered && ctx.features().writev_fixed) {
    io_uring_prep_rw(ring::kOpWritevFixed, s, fd, iov, unsigned(n), 0);
    s->buf_index = 0;
  } else {
    ring::prep_gathered_send(s, fd, msg, iov, n);
  }
  s->flags |= fixed_flag();
}

// IORING_OP_SHUTDOWN always runs on one of the kernel's io-wq threads: a wake-up and two context
// switches per FIN, about 11% of a relay's CPU per connection under wrk's `Connection: close`
// load (scripts/bench-compare.sh --conn-rate, --fixed-files on vs off). A SHUT_WR never blocks, so
// an ordinary descriptor is shut down here, and a NOP completes the operation as the ring's would
// (the owners' FIN states move on its completion). A direct descriptor has no syscall of its own.
void TcpLeg::shutdown(WorkerContext& ctx, PendingOps& ops, uint8_t lane) {
  io_uring_sqe* s = ops.sqe(ctx, Op::shutdown, lane);
  if (!fixed) {
    ::shutdown(fd, SHUT_WR);  // ignored, as the ring's result is: ENOTCONN if the peer reset
    io_uring_prep_nop(s);
    return;
  }
  io_uring_prep_shutdown(s, fd, SHUT_WR);
  s->flags |= fixed_flag();
}

void TcpLeg::connect(WorkerContext& ctx, PendingOps& ops, const net::Endpoint& to) {
  ctx.reserve(2);
  io_uring_sqe* s = ops.sqe(ctx, Op::connect);
  io_uring_prep_connect(s, fd, to.addr(), to.length);
  s->flags |= fixed_flag() | IOSQE_IO_LINK;
  io_uring_prep_link_timeout(ops.sqe(ctx, Op::connect_timeout), ctx.connect_timeout(), 0);
}

void TcpLeg::cancel_all(WorkerContext& ctx, PendingOps& ops) {
  io_uring_prep_cancel_fd(ops.sqe(ctx, Op::cancel), fd,
                          IORING_ASYNC_CANCEL_ALL | (fixed ? IORING_ASYNC_CANCEL_FD_FIXED : 0));
}

void TcpLeg::close(WorkerContext& ctx, PendingOps& ops, bool reset) {
  static const linger kReset{1, 0};
  if (!fixed) {
    if (reset) net::arm_reset_on_close(fd);
    io_uring_prep_close(ops.sqe(ctx, Op::close), fd);
  } else {
    ctx.reserve(2);
    if (reset) {
      io_uring_sqe* s = ops.sqe(ctx, Op::close);
      ring::prep_setsockopt(s, fd, SOL_SOCKET, SO_LINGER, &kReset, sizeof kReset);
      s->flags |= IOSQE_FIXED_FILE | IOSQE_IO_HARDLINK;  // the close runs even if this fails
    }
    io_uring_prep_close_direct(ops.sqe(ctx, Op::close), unsigned(fd));
  }
  fd = -1;
}

}  // namespace ringtunnel::proxy
