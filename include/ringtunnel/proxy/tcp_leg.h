// One socket of a proxy object, and what is done on it the same way everywhere: a relay has two
// (client and target), an HBONE stream one (its TCP side), an HBONE connection one (its TLS
// socket). Arming a buffer receive and changing its class, gathered sends, passing a FIN,
// connecting with a linked timeout, cancelling, and closing with or without a reset.
//
// The receive:
//   off --arm_recv()--> armed --final completion (EOF, error, -ENOBUFS, single-shot)--> off
//                         | kept(): class change, or the quota reached, while multishot
//                         v
//                      cancelling --final completion (-ECANCELED or the last data)--> off
//   (arm_recv() false: no class has buffers; the owner waits on the starved list)
//
// One direction's FIN (Fin):
//   open --the source's FIN read--> received --shutdown(SHUT_WR) submitted--> passing
//     --completed--> passed
//   (TCP -> tunnel: the session's END_STREAM is queued at once, so received -> passed;
//   the last FIN of a relay or stream on ordinary descriptors: received -> passed, and the
//   close sends it, both sockets having been read to their EOF)
//
// A gathered send (SendState):
//   idle --send()--> in_flight --completion--> idle
//                       | a relay moving its bytes out of the pool cancels it
//                       v
//                    cancelling --completion (-ECANCELED/-EINTR count as 0 sent)--> idle
#pragma once

#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstdint>
#include <optional>

#include "ringtunnel/net/address.h"
#include "ringtunnel/proxy/context.h"
#include "ringtunnel/ring/buffer_class.h"

namespace ringtunnel::proxy {

enum class RecvState : uint8_t { off, armed, cancelling };
enum class Fin : uint8_t { open, received, passing, passed };
enum class SendState : uint8_t { idle, in_flight, cancelling };

struct TcpLeg {
  int fd = -1;         // as operations name it: an fd, or a file-table slot if `fixed`
  bool fixed = false;  // a direct descriptor (the ring's file table)
  RecvState recv = RecvState::off;
  // arm_recv() found every class empty: the owner is on the starved list, and arms again only
  // once buffers have come back (its unstarve()).
  bool starved = false;
  uint8_t armed_cls = 0;
  ring::BufferClassPolicy policy;

  // Arms a receive into `pool`'s buffers of the class the policy wants (or the nearest with
  // buffers). False: every class is empty, nothing was submitted, and `starved` is set.
  bool arm_recv(WorkerContext& ctx, PendingOps& ops, uint8_t lane, ring::BufferPool& pool);
  // A receive completion: the state it leaves, and the buffer it filled (now taken from `pool`).
  std::optional<uint16_t> on_recv(ring::BufferPool& pool, const io_uring_cqe& cqe) {
    if (!(cqe.flags & IORING_CQE_F_MORE)) recv = RecvState::off;
    if (!(cqe.flags & IORING_CQE_F_BUFFER)) {
      if (cqe.res == -ENOBUFS) pool.ran_dry(armed_cls);
      return std::nullopt;
    }
    pool.taken(armed_cls);
    return uint16_t(cqe.flags >> IORING_CQE_BUFFER_SHIFT);
  }
  // `bytes` of a receive were kept: the policy learns the read size, and a multishot receive
  // still armed is cancelled when the class should change or the owner is `over_quota`.
  void kept(WorkerContext& ctx, PendingOps& ops, uint8_t lane, size_t bytes, bool over_quota,
            bool more);
  // One gathered send of `n` iovecs (`iov`, `msg` must live until it completes): WRITEV_FIXED
  // when `registered` (every iovec inside the registered pool) and the kernel has it.
  void send(WorkerContext& ctx, PendingOps& ops, uint8_t lane, iovec* iov, size_t n, msghdr& msg,
            bool registered);
  void shutdown(WorkerContext& ctx, PendingOps& ops, uint8_t lane);
  // A connect with a linked timeout (--connect-timeout): Op::connect, then Op::connect_timeout.
  void connect(WorkerContext& ctx, PendingOps& ops, const net::Endpoint& to);
  // Cancels every operation on the socket.
  void cancel_all(WorkerContext& ctx, PendingOps& ops);
  // Closes the socket, with a reset (SO_LINGER 0) when `reset`. fd is -1 afterwards.
  void close(WorkerContext& ctx, PendingOps& ops, bool reset);

  uint8_t fixed_flag() const { return fixed ? IOSQE_FIXED_FILE : 0; }
};

}  // namespace ringtunnel::proxy
