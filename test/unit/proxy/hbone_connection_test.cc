// HboneConnection (and its streams) driven by made-up completions.
#include "ringtunnel/proxy/hbone_connection.h"

#include <fcntl.h>

#include <cerrno>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "../tls/tls_test_support.h"
#include "proxy_fixture.h"

using namespace ringtunnel;
using namespace proxy_test;
using proxy::HboneConnection;
using proxy::HboneStream;
using proxy::Op;
using proxy::Owner;

namespace {

constexpr const char* kHboneRoute =
    "127.0.0.1:15001=hbone://127.0.0.1:15008/127.0.0.1:8080?identity=spiffe://td.test/ns/default/"
    "sa/node-b";

size_t msg_bytes(const io_uring_sqe& s) {
  REQUIRE(s.opcode == IORING_OP_SENDMSG);
  const auto* m = reinterpret_cast<const msghdr*>(s.addr);
  size_t n = 0;
  for (size_t i = 0; i < m->msg_iovlen; ++i)
    n += m->msg_iov[i].iov_len;
  return n;
}

uint8_t first_byte(const io_uring_sqe& s) {
  const auto* m = reinterpret_cast<const msghdr*>(s.addr);
  REQUIRE(m->msg_iovlen > 0);
  return *static_cast<const uint8_t*>(m->msg_iov[0].iov_base);
}

bool fd_open(int fd) {
  return fcntl(fd, F_GETFD) >= 0;
}

}  // namespace

TEST_CASE("HBONE connection: a handshake timeout with a send in flight waits for it, then closes") {
  const auto identity = tls_test::load("node-a");
  Fixture::Options options;
  options.features = features(false, true);
  options.identity = identity.get();
  Fixture f(make_config({kHboneRoute}), options);
  LogCapture log;
  const uint64_t t0 = g_now_ns = 1'000 * kMs;

  HboneConnection* c =
      f.objects().outbound.connection_for(*f.ctx, f.objects().outbound.route_target(0));
  REQUIRE(c);
  CHECK(c->state() == HboneConnection::State::connecting);
  CHECK(f.objects().outbound.size() == 1);
  std::vector<io_uring_sqe> sq = f.since(0);
  REQUIRE(sq.size() == 2);
  CHECK(sq[0].opcode == IORING_OP_CONNECT);
  CHECK(owner_of(sq[0]) == Owner::conn);
  CHECK(sq[0].flags == IOSQE_IO_LINK);  // a plain fd: connections are not in the file table
  CHECK(same_address(sq[0], f.config.routes[0].peer));
  CHECK(sq[1].opcode == IORING_OP_LINK_TIMEOUT);
  const int fd = sq[0].fd;
  CHECK(fd_open(fd));

  // Connected: the ClientHello is made and sent, and the receive is armed in the TLS pool.
  f.ring.complete_linked(f.sqe_at(0), 0);
  CHECK(c->state() == HboneConnection::State::handshaking);
  proxy::settle(*f.ctx);
  io_uring_sqe* recv = f.open_op(Owner::conn, Op::recv);
  io_uring_sqe* send = f.open_op(Owner::conn, Op::send);
  REQUIRE(recv);
  REQUIRE(send);
  CHECK(recv->fd == fd);
  CHECK(group_of(*recv) == f.tls_pool.group(0));
  CHECK(send->fd == fd);
  CHECK(first_byte(*send) == 0x16);  // a TLS handshake record
  const size_t hello = msg_bytes(*send);
  CHECK(hello > 0);
  const size_t before = f.submitted();

  // One tick short of --connect-timeout: nothing. At it: the connection fails and flushes; its
  // ClientHello is still in flight, so nothing is cancelled or closed yet.
  proxy::tick(*f.ctx, t0 + 4999 * kMs);
  CHECK(c->state() == HboneConnection::State::handshaking);
  g_now_ns = t0 + 5000 * kMs;
  proxy::tick(*f.ctx, g_now_ns);
  CHECK(c->state() == HboneConnection::State::flushing);
  proxy::settle(*f.ctx);
  CHECK(f.submitted() == before);
  std::vector<std::string> lines = log.lines();
  REQUIRE(lines.size() == 1);
  CHECK(lines[0] == "ringtunnel: hbone to 127.0.0.1:15008: closed: TLS handshake timed out");

  SUBCASE("the send completes: then the receive is cancelled") {
    f.ring.complete(send, int(hello));
    CHECK(f.submitted() == before);
    proxy::settle(*f.ctx);
  }
  SUBCASE("the send never completes: the close deadline cancels it too") {
    proxy::tick(*f.ctx, g_now_ns + 4999 * kMs);
    proxy::settle(*f.ctx);
    CHECK(f.submitted() == before);
    CHECK(c->state() == HboneConnection::State::flushing);
    g_now_ns += 5000 * kMs;
    proxy::tick(*f.ctx, g_now_ns);
  }
  CHECK(c->state() == HboneConnection::State::ending);
  sq = f.since(before);
  REQUIRE(sq.size() == 1);
  CHECK(sq[0].opcode == IORING_OP_ASYNC_CANCEL);
  CHECK(op_of(sq[0]) == Op::cancel);
  CHECK(sq[0].fd == fd);
  CHECK(sq[0].cancel_flags == (IORING_ASYNC_CANCEL_FD | IORING_ASYNC_CANCEL_ALL));
  const bool send_open = f.ring.is_open(send);
  CHECK(f.ring.complete_cancel_fd(f.sqe_at(before)) == (send_open ? 2u : 1u));
  CHECK_FALSE(f.ring.is_open(recv));
  CHECK_FALSE(f.ring.is_open(send));
  CHECK(c->state() == HboneConnection::State::closing);
  sq = f.since(before + 1);
  REQUIRE(sq.size() == 1);
  CHECK(sq[0].opcode == IORING_OP_CLOSE);
  CHECK(sq[0].fd == fd);
  CHECK(op_of(sq[0]) == Op::close);
  f.ring.complete(f.sqe_at(before + 1), 0);
  CHECK_FALSE(fd_open(fd));
  CHECK(c->state() == HboneConnection::State::free);
  CHECK(f.objects().conns.live() == 0);
  CHECK(f.objects().outbound.size() == 0);
  CHECK(f.ring.open().empty());
  CHECK(log.lines().size() == 1);  // nothing more was logged
}

TEST_CASE("HBONE: late completions for a released connection or stream are dropped and logged") {
  const auto identity = tls_test::load("node-a");
  Fixture::Options options;
  options.features = features(false, true);
  options.identity = identity.get();
  Fixture f(make_config({kHboneRoute}), options);
  LogCapture log;
  LoopbackPair pair;

  // A client of the hbone:// listener: its stream waits for a connection, whose connect is
  // refused. The stream ends (end=peer_error) and resets its client; both are released.
  REQUIRE(f.ctx->budgets.admit_connection(true, 0));
  proxy::open_outbound_stream(*f.ctx, pair.accepted, 0);
  REQUIRE(f.objects().streams.live() == 1);
  REQUIRE(f.objects().conns.live() == 1);
  io_uring_sqe* connect = f.open_op(Owner::conn, Op::connect);
  REQUIRE(connect);
  const ring::OpTag conn_tag = tag_of(*connect);
  f.ring.complete_linked(connect, -ECONNREFUSED);
  io_uring_sqe* stream_close = f.open_op(Owner::stream, Op::close);
  REQUIRE(stream_close);
  CHECK(stream_close->fd == pair.accepted);
  const ring::OpTag stream_tag = tag_of(*stream_close);
  f.ring.complete(stream_close, 0);
  CHECK(f.objects().streams.live() == 0);
  proxy::settle(*f.ctx);
  io_uring_sqe* conn_close = f.open_op(Owner::conn, Op::close);
  REQUIRE(conn_close);
  f.ring.complete(conn_close, 0);
  CHECK(f.objects().conns.live() == 0);
  CHECK(f.ring.open().empty());
  CHECK(f.ctx->budgets.accepted_live() == 0);
  const std::vector<std::string> access = f.access_lines();
  REQUIRE(access.size() == 1);
  CHECK(access[0].find(" end=peer_error ") != std::string::npos);
  std::vector<std::string> lines = log.lines();
  REQUIRE(lines.size() == 1);
  CHECK(lines[0] == "ringtunnel: hbone to 127.0.0.1:15008: closed: connect: Connection refused");

  // Late completions for both: nothing reaches them, nothing is submitted, one line each.
  const size_t before = f.submitted();
  io_uring_cqe late{};
  late.user_data = ring::encode(conn_tag);
  late.res = 0;
  proxy::dispatch(*f.ctx, conn_tag, late);
  ring::OpTag recv_tag = stream_tag;
  recv_tag.op = uint8_t(Op::recv);
  late.user_data = ring::encode(recv_tag);
  late.res = 100;
  proxy::dispatch(*f.ctx, recv_tag, late);
  CHECK(f.submitted() == before);
  lines = log.lines();
  REQUIRE(lines.size() == 3);
  CHECK(lines[1] ==
        "ringtunnel: worker 0: completion for a closed HBONE connection (op connect, res 0), "
        "ignored");
  CHECK(lines[2] ==
        "ringtunnel: worker 0: completion for a closed HBONE stream (op recv, res 100), ignored");

  // A stale generation: the slots reused by a new stream and connection.
  LoopbackPair second;
  REQUIRE(f.ctx->budgets.admit_connection(true, 0));
  proxy::open_outbound_stream(*f.ctx, second.accepted, 0);
  HboneStream* s = f.objects().streams.find(stream_tag.index, stream_tag.generation + 1);
  HboneConnection* c = f.objects().conns.find(conn_tag.index, conn_tag.generation + 1);
  REQUIRE(s);
  REQUIRE(c);
  const size_t reused = f.submitted();
  late.res = -ECONNREFUSED;
  late.user_data = ring::encode(conn_tag);
  proxy::dispatch(*f.ctx, conn_tag, late);
  CHECK(c->state() == HboneConnection::State::connecting);  // the old refusal is not its own
  CHECK(s->state() == HboneStream::State::opening);
  CHECK(f.submitted() == reused);
  CHECK(log.count("completion for a closed HBONE connection (op connect, res -111)") == 1);
  f.finish_all();
}
