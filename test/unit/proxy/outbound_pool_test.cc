// OutboundPool: pooled outbound HBONE connections, shared by key (peer and identity), and their
// idle close; the handshake is played in memory between two workers' fake rings.
#include "ringtunnel/proxy/outbound_pool.h"

#include <cerrno>
#include <string>
#include <string_view>
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

constexpr const char* kToB8080 =
    "127.0.0.1:15001=hbone://127.0.0.1:15008/127.0.0.1:8080?identity=spiffe://td.test/ns/default/"
    "sa/node-b";
constexpr const char* kToB8081 =
    "127.0.0.1:15002=hbone://127.0.0.1:15008/127.0.0.1:8081?identity=spiffe://td.test/ns/default/"
    "sa/node-b";
constexpr const char* kToIntruder =
    "127.0.0.1:15003=hbone://127.0.0.1:15008/127.0.0.1:8080?identity=spiffe://td.test/ns/default/"
    "sa/intruder";

std::vector<io_uring_sqe> connects(const Fixture& f) {
  std::vector<io_uring_sqe> out;
  for (const io_uring_sqe& s : f.ring.submitted())
    if (s.opcode == IORING_OP_CONNECT) out.push_back(s);
  return out;
}

// Plays the network between two workers: the bytes of `from`'s connection's gathered send in
// flight go into `to`'s connection's armed receive (as many receives as the TLS pool's buffers
// need), and the send completes. Returns the bytes carried (0: no send was in flight).
size_t carry(Fixture& from, Fixture& to) {
  io_uring_sqe* send = from.open_op(Owner::conn, Op::send);
  if (!send) return 0;
  REQUIRE(send->opcode == IORING_OP_SENDMSG);
  const auto* m = reinterpret_cast<const msghdr*>(send->addr);
  std::string bytes;
  for (size_t i = 0; i < m->msg_iovlen; ++i)
    bytes.append(static_cast<const char*>(m->msg_iov[i].iov_base), m->msg_iov[i].iov_len);
  for (size_t at = 0; at < bytes.size();) {
    proxy::settle(*to.ctx);
    io_uring_sqe* recv = to.open_op(Owner::conn, Op::recv);
    REQUIRE(recv);
    const int n = to.kernel->recv(recv, std::string_view(bytes).substr(at));
    REQUIRE(n > 0);
    at += size_t(n);
  }
  from.ring.complete(send, int(bytes.size()));
  proxy::settle(*from.ctx);
  proxy::settle(*to.ctx);
  return bytes.size();
}

}  // namespace

TEST_CASE(
    "outbound pool: streams to one peer and identity share a connection; another identity "
    "dials its own") {
  const auto identity = tls_test::load("node-a");
  Fixture::Options options;
  options.features = features(false, true);
  options.identity = identity.get();
  Fixture f(make_config({kToB8080, kToB8081, kToIntruder}), options);
  LogCapture log;
  LoopbackPair a, b, c;

  REQUIRE(f.ctx->budgets.admit_connection(true, 0));
  proxy::open_outbound_stream(*f.ctx, a.accepted, 0);
  REQUIRE(f.ctx->budgets.admit_connection(true, 1));
  proxy::open_outbound_stream(*f.ctx, b.accepted, 1);
  CHECK(f.objects().streams.live() == 2);
  CHECK(f.objects().conns.live() == 1);
  CHECK(f.objects().outbound.size() == 1);
  std::vector<io_uring_sqe> dials = connects(f);
  REQUIRE(dials.size() == 1);  // the second stream waits for the same connection's handshake
  CHECK(owner_of(dials[0]) == Owner::conn);
  CHECK(same_address(dials[0], f.config.routes[0].peer));
  for (uint32_t i = 0; i < 2; ++i)
    CHECK(f.objects().streams.find(i, 1)->state() == HboneStream::State::opening);

  // The same peer, but a route that expects another identity: a connection of its own.
  REQUIRE(f.ctx->budgets.admit_connection(true, 2));
  proxy::open_outbound_stream(*f.ctx, c.accepted, 2);
  dials = connects(f);
  REQUIRE(dials.size() == 2);
  CHECK(same_address(dials[1], f.config.routes[2].peer));
  CHECK(tag_of(dials[1]).index != tag_of(dials[0]).index);
  CHECK(f.objects().conns.live() == 2);
  CHECK(f.objects().outbound.size() == 2);
  CHECK(log.lines().empty());

  f.finish_all();
  CHECK(f.objects().outbound.size() == 0);
  CHECK(f.ctx->budgets.accepted_live() == 0);
  CHECK(f.access_lines().size() == 3);
}

TEST_CASE(
    "outbound pool: a connection idle past --pool-idle-timeout says GOAWAY and closes; the "
    "next stream dials again") {
  const auto node_a = tls_test::load("node-a");
  const auto node_b = tls_test::load("node-b");
  // Worker A dials B; single-shot receives, so every completion of the TLS bytes is one read.
  Fixture::Options oa;
  oa.features = features(false, false);
  oa.identity = node_a.get();
  config::Config ca = make_config({kToB8080});
  ca.pool_idle_timeout_ms = 2000;
  Fixture a(std::move(ca), oa);
  Fixture::Options ob = oa;
  ob.identity = node_b.get();
  config::Config cb;
  cb.hbone_listens.emplace_back();
  REQUIRE(net::parse_endpoint("127.0.0.1:15008", cb.hbone_listens[0].at).empty());
  cb.hbone_listens[0].text = "127.0.0.1:15008";
  Fixture b(std::move(cb), ob);
  LogCapture log;
  const uint64_t t0 = g_now_ns = 7'000 * kMs;

  // B accepts a connection; A dials (the fake ring connects at once).
  LoopbackPair wire;
  REQUIRE(b.ctx->budgets.admit_connection(false, 0));
  proxy::open_inbound_conn(*b.ctx, wire.accepted, b.ctx->config.hbone_listens[0].text);
  REQUIRE(b.objects().conns.live() == 1);
  HboneConnection* in = b.objects().conns.find(0, 1);
  REQUIRE(in);
  HboneConnection* out =
      a.objects().outbound.connection_for(*a.ctx, a.objects().outbound.route_target(0));
  REQUIRE(out);
  a.ring.complete_linked(a.open_op(Owner::conn, Op::connect), 0);
  proxy::settle(*a.ctx);

  // The handshake and the HTTP/2 prefaces, carried both ways until neither side sends.
  size_t rounds = 0;
  while (carry(a, b) + carry(b, a) > 0)
    REQUIRE(++rounds < 20);
  CHECK(rounds >= 2);
  REQUIRE(out->state() == HboneConnection::State::open);
  REQUIRE(in->state() == HboneConnection::State::open);
  CHECK(out->info().peer_identity == "spiffe://td.test/ns/default/sa/node-b");
  CHECK(in->info().peer_identity == "spiffe://td.test/ns/default/sa/node-a");
  CHECK(b.ctx->budgets.handshakes() == 0);
  CHECK(log.lines().empty());

  // Open and idle: the pool hands it out again, with no dial.
  CHECK(a.objects().outbound.connection_for(*a.ctx, a.objects().outbound.route_target(0)) == out);
  CHECK(connects(a).size() == 1);

  // Idle for just under --pool-idle-timeout: it stays. At the timeout: GOAWAY, and with no stream
  // the session is finished at once: close_notify follows, and the connection flushes.
  proxy::tick(*a.ctx, t0 + 1999 * kMs);
  CHECK(out->state() == HboneConnection::State::open);
  g_now_ns = t0 + 2000 * kMs;
  proxy::tick(*a.ctx, g_now_ns);
  CHECK(out->state() == HboneConnection::State::going_away);
  // Going away: the pool no longer hands it out.
  CHECK_FALSE(out->accepts_stream());
  const size_t before = a.submitted();
  proxy::settle(*a.ctx);
  CHECK(out->state() == HboneConnection::State::flushing);
  std::vector<io_uring_sqe> sq = a.since(before);
  REQUIRE(sq.size() == 1);
  CHECK(op_of(sq[0]) == Op::send);

  // B reads the GOAWAY and the close_notify: it closes too (its log line says why).
  CHECK(carry(a, b) > 0);
  CHECK(out->state() == HboneConnection::State::ending);
  sq = a.since(before + 1);
  REQUIRE(sq.size() == 1);
  CHECK(sq[0].opcode == IORING_OP_ASYNC_CANCEL);  // the receive still armed
  a.ring.complete_cancel_fd(a.sqe_at(before + 1));
  CHECK(out->state() == HboneConnection::State::closing);
  io_uring_sqe* close = a.open_op(Owner::conn, Op::close);
  REQUIRE(close);
  a.ring.complete(close, 0);
  CHECK(out->state() == HboneConnection::State::free);
  CHECK(a.objects().outbound.size() == 0);
  CHECK(a.ring.open().empty());
  CHECK(in->state() >= HboneConnection::State::flushing);
  const std::vector<std::string> lines = log.lines();
  REQUIRE(lines.size() == 1);
  CHECK(lines[0].starts_with("ringtunnel: hbone from 127.0.0.1:"));
  CHECK(lines[0].ends_with(
      " identity=spiffe://td.test/ns/default/sa/node-a: closed: the peer closed the connection"));

  // The next stream finds no connection and dials again.
  LoopbackPair client;
  REQUIRE(a.ctx->budgets.admit_connection(true, 0));
  proxy::open_outbound_stream(*a.ctx, client.accepted, 0);
  CHECK(connects(a).size() == 2);
  CHECK(a.objects().outbound.size() == 1);
  a.finish_all();
  b.finish_all();
}
