// Relay driven by made-up completions: no kernel, the SQEs it prepares are the assertions.
#include "ringtunnel/proxy/relay.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "proxy_fixture.h"

using namespace ringtunnel;
using namespace proxy_test;
using proxy::Op;
using proxy::Owner;
using proxy::Relay;
using test::FakeSubmitter;

namespace {

constexpr const char* kRoute = "127.0.0.1:15001=tcp://127.0.0.1:9";

bool fd_open(int fd) {
  return fcntl(fd, F_GETFD) >= 0;
}

uint16_t local_port(int fd) {
  sockaddr_in a{};
  socklen_t len = sizeof a;
  REQUIRE(getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0);
  return ntohs(a.sin_port);
}

// The bytes a gathered send (sendmsg) carries.
std::string sent_bytes(const io_uring_sqe& s) {
  REQUIRE(s.opcode == IORING_OP_SENDMSG);
  const auto* m = reinterpret_cast<const msghdr*>(s.addr);
  std::string out;
  for (size_t i = 0; i < m->msg_iovlen; ++i)
    out.append(static_cast<const char*>(m->msg_iov[i].iov_base), m->msg_iov[i].iov_len);
  return out;
}

// A relay of route 0 on `client` (admitted as the worker admits it), connected: its slot.
Relay* open_connected(Fixture& f, int client) {
  REQUIRE(f.ctx->budgets.admit_connection(false, 0));
  const size_t first = f.submitted();
  proxy::open_relay(*f.ctx, client, 0);
  io_uring_sqe* connect = f.open_op(Owner::relay, Op::connect);
  REQUIRE(connect);
  for (io_uring_sqe* c; (c = f.open_op(Owner::relay, Op::close));)
    f.ring.complete(c, 0);
  f.ring.complete_linked(connect, 0);
  const ring::OpTag tag = tag_of(f.ring.submitted()[first]);
  Relay* r = f.objects().relays.find(tag.index, tag.generation);
  REQUIRE(r);
  REQUIRE(r->state() == Relay::State::relaying);
  return r;
}

}  // namespace

TEST_CASE("relay: the target resets -> cancel both -> close (client reset) -> released") {
  // The kernel promises no order between a cancel's completion and the cancelled ones'.
  auto order = FakeSubmitter::CancelOrder::cancel_first;
  SUBCASE("the cancel completes first") {}
  SUBCASE("the cancelled operations complete first") {
    order = FakeSubmitter::CancelOrder::cancelled_first;
  }
  Fixture f(make_config({kRoute}), {features(true, true)});
  LogCapture log;
  LoopbackPair pair;
  const uint16_t far_port = local_port(pair.far);
  REQUIRE(f.ctx->budgets.admit_connection(false, 0));

  proxy::open_relay(*f.ctx, pair.accepted, 0);
  Relay* r = f.objects().relays.find(0, 1);
  REQUIRE(r);
  CHECK(r->state() == Relay::State::connecting);

  // Both sockets go into the file table (slots 0 and 1), their fds are closed, and the target is
  // dialled on its direct descriptor with a linked timeout.
  REQUIRE(f.ring.file_updates().size() == 1);
  CHECK(f.ring.file_updates()[0].slot == 0);
  REQUIRE(f.ring.file_updates()[0].fds.size() == 2);
  CHECK(f.ring.file_updates()[0].fds[0] == pair.accepted);
  const int target_fd = f.ring.file_updates()[0].fds[1];
  std::vector<io_uring_sqe> sq = f.since(0);
  REQUIRE(sq.size() == 4);
  CHECK(sq[0].opcode == IORING_OP_CLOSE);
  CHECK(sq[0].fd == pair.accepted);
  CHECK(sq[0].file_index == 0);  // a plain close
  CHECK(sq[1].opcode == IORING_OP_CLOSE);
  CHECK(sq[1].fd == target_fd);
  CHECK(sq[2].opcode == IORING_OP_CONNECT);
  CHECK(sq[2].fd == 1);
  CHECK(sq[2].flags == (IOSQE_FIXED_FILE | IOSQE_IO_LINK));
  CHECK(same_address(sq[2], f.config.routes[0].target));
  CHECK(sq[3].opcode == IORING_OP_LINK_TIMEOUT);
  for (const io_uring_sqe& s : sq) {
    CHECK(owner_of(s) == Owner::relay);
    CHECK(tag_of(s).index == 0);
    CHECK(tag_of(s).generation == 1);
  }
  CHECK(op_of(sq[0]) == Op::close);
  CHECK(op_of(sq[2]) == Op::connect);
  CHECK(op_of(sq[3]) == Op::connect_timeout);
  CHECK(f.ring.reservations() == std::vector<unsigned>{2});  // the linked pair stays together

  f.ring.complete(f.sqe_at(0), 0);
  f.ring.complete(f.sqe_at(1), 0);
  CHECK_FALSE(fd_open(pair.accepted));  // FakeSubmitter closes what a plain close names
  CHECK_FALSE(fd_open(target_fd));
  f.ring.complete_linked(f.sqe_at(2), 0);
  CHECK(r->state() == Relay::State::relaying);
  CHECK(f.submitted() == 4);  // nothing until the relay is serviced

  proxy::settle(*f.ctx);
  sq = f.since(4);
  REQUIRE(sq.size() == 2);
  for (uint8_t lane = 0; lane < 2; ++lane) {
    const io_uring_sqe& s = sq[lane];
    CHECK(s.opcode == IORING_OP_RECV);
    CHECK(op_of(s) == Op::recv);
    CHECK(tag_of(s).lane == lane);
    CHECK(s.fd == lane);  // direction d receives on leg d: client (slot 0), target (slot 1)
    CHECK(s.flags == (IOSQE_FIXED_FILE | IOSQE_BUFFER_SELECT));
    CHECK((s.ioprio & IORING_RECV_MULTISHOT) != 0);
    CHECK(group_of(s) == f.pool.group(0));
  }

  // The target resets: the relay ends and cancels everything on both sockets; no close yet.
  f.ring.complete(f.sqe_at(5), -ECONNRESET);
  CHECK(r->state() == Relay::State::ending);
  sq = f.since(6);
  REQUIRE(sq.size() == 2);
  for (uint8_t leg = 0; leg < 2; ++leg) {
    CHECK(sq[leg].opcode == IORING_OP_ASYNC_CANCEL);
    CHECK(op_of(sq[leg]) == Op::cancel);
    CHECK(sq[leg].fd == leg);
    CHECK(sq[leg].cancel_flags ==
          (IORING_ASYNC_CANCEL_FD | IORING_ASYNC_CANCEL_ALL | IORING_ASYNC_CANCEL_FD_FIXED));
  }
  proxy::settle(*f.ctx);
  CHECK(f.submitted() == 8);

  // The client's receive is cancelled (-ECANCELED); both cancels complete. Only after the last
  // of them are the closes submitted.
  CHECK(f.ring.complete_cancel_fd(f.sqe_at(6), order) == 1);
  CHECK_FALSE(f.ring.is_open(f.sqe_at(4)));
  CHECK(r->state() == Relay::State::ending);
  CHECK(f.submitted() == 8);
  CHECK(f.ring.complete_cancel_fd(f.sqe_at(7), order) == 0);
  CHECK(r->state() == Relay::State::closing);
  sq = f.since(8);
  REQUIRE(sq.size() == 3);
  // The client is reset (the target reset us): SO_LINGER 0, hard-linked to its close.
  CHECK(sq[0].opcode == IORING_OP_URING_CMD);
  CHECK(sq[0].fd == 0);
  CHECK(sq[0].flags == (IOSQE_FIXED_FILE | IOSQE_IO_HARDLINK));
  CHECK(sq[0].addr == (uint64_t(SOL_SOCKET) | uint64_t(SO_LINGER) << 32));
  CHECK(sq[1].opcode == IORING_OP_CLOSE);
  CHECK(sq[1].file_index == 1);            // close_direct of slot 0
  CHECK(sq[2].opcode == IORING_OP_CLOSE);  // the target: a plain FIN close, no SO_LINGER
  CHECK(sq[2].file_index == 2);
  for (const io_uring_sqe& s : sq)
    CHECK(op_of(s) == Op::close);
  CHECK(f.ring.reservations() == std::vector<unsigned>{2, 2, 2});
  CHECK(f.access_lines().empty());

  f.ring.complete(f.sqe_at(8), 0);
  f.ring.complete(f.sqe_at(9), 0);
  CHECK(r->state() == Relay::State::closing);  // one close still in flight
  f.ring.complete(f.sqe_at(10), 0);
  CHECK(r->state() == Relay::State::free);
  CHECK(f.objects().relays.live() == 0);
  CHECK(f.ctx->budgets.accepted_live() == 0);
  CHECK(f.ring.open().empty());
  const std::vector<std::string> access = f.access_lines();
  REQUIRE(access.size() == 1);
  CHECK(access[0].starts_with(
      "access listener=127.0.0.1:15001 client=127.0.0.1:" + std::to_string(far_port) +
      " target=127.0.0.1:9 bytes_up=0 bytes_down=0 duration_ms=0 "
      "end=target_reset start="));
  CHECK(log.lines().empty());
  // Counted in the traffic metrics: opened, and closed with response_flags "-" (a reset is no
  // failure to establish).
  size_t series = 0;
  f.ctx->metrics.traffic.for_each([&](const stats::TrafficSeries& s) {
    ++series;
    CHECK(s.labels.reporter == stats::Reporter::source);
    CHECK(s.opened.value() == 1);
    CHECK(s.closed[size_t(stats::ResponseFlag::none)].value() == 1);
    CHECK(s.received_bytes.value() == 0);
  });
  CHECK(series == 1);

  // A completion for the released relay (its slot free, same generation): dropped and logged.
  io_uring_cqe late{};
  late.user_data = f.ring.submitted()[4].user_data;
  late.res = -ECANCELED;
  proxy::dispatch(*f.ctx, ring::decode(late.user_data), late);
  CHECK(f.submitted() == 11);
  std::vector<std::string> lines = log.lines();
  REQUIRE(lines.size() == 1);
  CHECK(lines[0] ==
        "ringtunnel: worker 0: completion for a closed relay (op recv, res -125), ignored");

  // The slot taken again (generation 2): the old generation's completion does not reach it.
  LoopbackPair second;
  Relay* r2 = open_connected(f, second.accepted);
  CHECK(r2 == r);
  CHECK(r2->slot.generation == 2);
  proxy::settle(*f.ctx);
  const size_t before = f.submitted();
  late.res = 0;  // would be EOF: the client's FIN, if it reached the new relay
  proxy::dispatch(*f.ctx, ring::decode(late.user_data), late);
  CHECK(f.submitted() == before);
  CHECK(r2->state() == Relay::State::relaying);
  lines = log.lines();
  REQUIRE(lines.size() == 2);
  CHECK(lines[1] ==
        "ringtunnel: worker 0: completion for a closed relay (op recv, res 0), ignored");
  f.finish_all();
}

TEST_CASE("relay: with every receive buffer held, the next receive waits on the starved list") {
  // One buffer per class: three reads hold the whole pool while the first send is in flight.
  Fixture::Options options;
  options.features = features(false, false);  // plain fds, single-shot receives
  options.counts = {1, 1, 1};
  Fixture f(make_config({kRoute}), options);
  LogCapture log;
  LoopbackPair pair;
  Relay* r = open_connected(f, pair.accepted);
  proxy::settle(*f.ctx);
  const auto recv_of = [&](uint8_t lane) {
    io_uring_sqe* s = f.open_op(Owner::relay, Op::recv, lane);
    REQUIRE(s);
    return s;
  };
  CHECK(group_of(*recv_of(0)) == f.pool.group(0));
  CHECK(group_of(*recv_of(1)) == f.pool.group(0));
  auto& starved = f.ctx->starved[proxy::WorkerContext::list(Owner::relay)];

  // The client sends: the read takes class 0's only buffer; it is sent on to the target, and
  // the next receive is armed in the nearest class that still has one.
  CHECK(f.kernel->recv(recv_of(0), "hello") == 5);
  proxy::settle(*f.ctx);
  io_uring_sqe* send = f.open_op(Owner::relay, Op::send, 0);
  REQUIRE(send);
  CHECK(sent_bytes(*send) == "hello");
  CHECK(group_of(*recv_of(0)) == f.pool.group(1));
  // The target's receive, armed on class 0, finds it empty (-ENOBUFS) and moves to class 1.
  CHECK(f.kernel->recv(recv_of(1), "x") == -ENOBUFS);
  proxy::settle(*f.ctx);
  CHECK(group_of(*recv_of(1)) == f.pool.group(1));
  // Class 1's buffer, then class 2's: the send in flight holds "hello", the queue the rest.
  CHECK(f.kernel->recv(recv_of(0), "world") == 5);
  proxy::settle(*f.ctx);
  CHECK(group_of(*recv_of(0)) == f.pool.group(2));
  CHECK(f.kernel->recv(recv_of(1), "x") == -ENOBUFS);
  proxy::settle(*f.ctx);
  CHECK(group_of(*recv_of(1)) == f.pool.group(2));
  CHECK(f.kernel->recv(recv_of(0), "again") == 5);
  for (uint8_t c = 0; c < 3; ++c)
    CHECK(f.pool.available(c) == 0);
  CHECK(starved.empty());

  // No class has a buffer: the client's receive is not armed, and the relay waits.
  const size_t before = f.submitted();
  proxy::settle(*f.ctx);
  CHECK(f.submitted() == before);
  CHECK(f.open_op(Owner::relay, Op::recv, 0) == nullptr);
  REQUIRE(starved.size() == 1);
  CHECK(starved[0].index == r->slot.index);
  CHECK(starved[0].generation == r->slot.generation);
  CHECK(starved[0].lane == 0);
  CHECK(proxy::under_pressure(*f.ctx));

  // The first send completes: "hello"'s buffer is given back; once published, the relay is
  // serviced again: it sends the rest and receives into class 0 again.
  f.ring.complete(send, 5);
  CHECK(f.kernel->ready(f.pool, 0) == 0);  // given back, not yet published to the kernel
  proxy::settle(*f.ctx);
  CHECK(f.kernel->ready(f.pool, 0) == 1);
  CHECK(starved.empty());
  const std::vector<io_uring_sqe> sq = f.since(before);
  REQUIRE(sq.size() == 2);
  CHECK(op_of(sq[0]) == Op::send);
  CHECK(sent_bytes(sq[0]) == "worldagain");
  CHECK(op_of(sq[1]) == Op::recv);
  CHECK(tag_of(sq[1]).lane == 0);
  CHECK(group_of(sq[1]) == f.pool.group(0));
  CHECK(sq[1].fd == pair.accepted);
  CHECK(log.lines().empty());
  f.finish_all();
}
