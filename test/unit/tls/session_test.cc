// Two sessions wired back to back in memory: a client with node-a's credentials dialling a
// server with node-b's, unless a test says otherwise.
#include "ringtunnel/tls/session.h"

#include <wolfssl/options.h>  // first: the configuration every wolfSSL header depends on

#include <wolfssl/ssl.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include <doctest/doctest.h>

#include "tls_test_support.h"

using namespace ringtunnel::tls;
using tls_test::handshake;
using tls_test::read_all;
using tls_test::records_of;
using tls_test::spiffe;
using tls_test::take_pending;

namespace {

constexpr uint8_t kApplicationData = 23;
constexpr size_t kFullRecord = kMaxRecordPlaintext + 1 + 16;  // content type byte, GCM tag

struct Pair {
  BlockPool pool;
  std::unique_ptr<Credentials> client_creds = tls_test::load("node-a");
  std::unique_ptr<Credentials> server_creds = tls_test::load("node-b");
  std::unique_ptr<TlsSession> client;
  std::unique_ptr<TlsSession> server;

  explicit Pair(const SessionOptions& client_options = {},
                const SessionOptions& server_options = {}) {
    client = std::make_unique<TlsSession>(*client_creds, Role::client, pool, client_options);
    server = std::make_unique<TlsSession>(*server_creds, Role::server, pool, server_options);
    client->expect_peer(spiffe("node-b"));
  }
  ~Pair() {
    client.reset();
    server.reset();
    // Every block went back: nothing leaked from the queues or the staging buffer.
    CHECK(pool.blocks_out() == 0);
  }
  void connect(size_t chunk = SIZE_MAX) {
    const tls_test::HandshakeOutcome o = handshake(*client, *server, chunk);
    INFO("client: ", client->failure(), " server: ", server->failure());
    REQUIRE(o.client == HandshakeStatus::done);
    REQUIRE(o.server == HandshakeStatus::done);
  }
};

std::string random_bytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i + 8 <= n; i += 8) {
    const uint64_t v = rng();
    std::memcpy(s.data() + i, &v, 8);
  }
  for (size_t i = n - n % 8; i < n; ++i)
    s[i] = char(rng());
  return s;
}

bool write(TlsSession& s, const std::string& data, Flush flush = Flush::now) {
  return s.write(reinterpret_cast<const uint8_t*>(data.data()), data.size(), flush);
}

// Sends `data` from one session to the other and returns what the receiver read.
std::string transfer(TlsSession& from, TlsSession& to, const std::string& data,
                     size_t chunk = SIZE_MAX) {
  REQUIRE(write(from, data));
  tls_test::feed(to, take_pending(from), chunk);
  return read_all(to);
}

}  // namespace

TEST_CASE("mutual TLS 1.3 handshake, whole flights at a time") {
  Pair p;
  p.connect();
  CHECK(p.client->state() == TlsState::open);
  CHECK(p.server->state() == TlsState::open);
  CHECK(p.server->peer_identity() == spiffe("node-a"));
  CHECK(p.client->peer_identity() == spiffe("node-b"));
  CHECK(std::string(p.client->cipher()) == "TLS13-AES128-GCM-SHA256");
  CHECK(p.client->failure() == "");
  CHECK(transfer(*p.client, *p.server, "ping") == "ping");
  CHECK(transfer(*p.server, *p.client, "pong") == "pong");
}

TEST_CASE("handshake and data fed one byte at a time") {
  Pair p;
  p.connect(1);
  CHECK(p.server->peer_identity() == spiffe("node-a"));
  const std::string data = random_bytes(40000, 1);
  CHECK(transfer(*p.client, *p.server, data, 1) == data);
  CHECK(transfer(*p.server, *p.client, data, 1) == data);
  // Byte by byte, with a read after every byte: a partial record yields nothing and no error.
  REQUIRE(write(*p.client, "0123456789"));
  const std::string wire = take_pending(*p.client);
  std::string got;
  uint8_t buf[64];
  size_t fed = 0;
  for (char b : wire) {
    p.server->feed(reinterpret_cast<const uint8_t*>(&b), 1);
    ++fed;
    const ReadResult r = p.server->read(buf, sizeof buf);
    CHECK(r.status == ReadStatus::open);
    got.append(reinterpret_cast<const char*>(buf), r.bytes);
    // The partial record waits in the inbound queue, where it will be opened.
    if (got.empty()) CHECK(p.server->inbound_bytes() == fed);
  }
  CHECK(p.server->inbound_bytes() == 0);
  CHECK(got == "0123456789");
}

TEST_CASE("many records in one feed, and a read buffer smaller than a record") {
  Pair p;
  p.connect();
  std::string want;
  for (int i = 0; i < 50; ++i) {
    const std::string msg = "message " + std::to_string(i) + ";";
    REQUIRE(write(*p.client, msg));
    want += msg;
  }
  const std::string wire = take_pending(*p.client);
  CHECK(records_of(wire).size() == 50);  // small writes went out at once, one record each
  p.server->feed(reinterpret_cast<const uint8_t*>(wire.data()), wire.size());
  std::string got;
  uint8_t buf[7];
  for (;;) {
    const ReadResult r = p.server->read(buf, sizeof buf);
    got.append(reinterpret_cast<const char*>(buf), r.bytes);
    if (r.bytes < sizeof buf) break;
  }
  CHECK(got == want);
  CHECK(p.server->inbound_bytes() == 0);
}

TEST_CASE("16 MiB of random data each way arrives byte-exact, with short sends") {
  Pair p;
  p.connect();
  const size_t total = 16u << 20;
  const std::string up = random_bytes(total, 2), down = random_bytes(total, 3);
  std::string got_up, got_down;
  // Both directions at once, in writes of odd sizes, each wire carried by sends of at most
  // 100,000 bytes and fed in pieces of 70,000: nothing lines up with records.
  const size_t write_size = 1'000'003;
  for (size_t off = 0; off < total; off += write_size) {
    const size_t n = std::min(write_size, total - off);
    REQUIRE(p.client->write(reinterpret_cast<const uint8_t*>(up.data()) + off, n));
    REQUIRE(p.server->write(reinterpret_cast<const uint8_t*>(down.data()) + off, n));
    tls_test::feed(*p.server, take_pending(*p.client, 100'000), 70'000);
    tls_test::feed(*p.client, take_pending(*p.server, 100'000), 70'000);
    got_up += read_all(*p.server);
    got_down += read_all(*p.client);
  }
  CHECK(got_up.size() == total);
  CHECK(got_down.size() == total);
  CHECK(got_up == up);
  CHECK(got_down == down);
}

TEST_CASE("bulk writes become full 16 KiB records; the tail goes out at once") {
  Pair p;
  p.connect();
  const std::string data = random_bytes((1u << 20) + 100, 4);
  REQUIRE(write(*p.client, data));
  const std::string wire = take_pending(*p.client);
  const std::vector<tls_test::Record> records = records_of(wire);
  REQUIRE(records.size() == 65);
  for (size_t i = 0; i < 64; ++i) {
    CHECK(records[i].type == kApplicationData);
    CHECK(records[i].length == kFullRecord);
  }
  CHECK(records[64].length == 100 + 17);
  CHECK(wire.size() == 64 * kMaxRecordWireBytes + 5 + 117);
  tls_test::feed(*p.server, wire, SIZE_MAX);
  CHECK(read_all(*p.server) == data);
}

TEST_CASE("small pieces written with Flush::later share full records") {
  Pair p;
  p.connect();
  // An HTTP/2-like stream: 9-byte frame headers, each followed by its payload.
  std::string want;
  std::vector<std::string> pieces;
  for (int i = 0; i < 40; ++i) {
    pieces.push_back(std::string(9, char('h' + i % 3)));
    pieces.push_back(random_bytes(size_t(1000 + i * 997), uint64_t(10 + i)));
  }
  std::vector<iovec> iov;
  for (std::string& s : pieces) {
    iov.push_back({s.data(), s.size()});
    want += s;
  }
  // In two gathered writes, the first of which keeps its tail back.
  const size_t half = iov.size() / 2;
  REQUIRE(p.client->write(std::span<const iovec>(iov.data(), half), Flush::later));
  REQUIRE(
      p.client->write(std::span<const iovec>(iov.data() + half, iov.size() - half), Flush::later));
  REQUIRE(p.client->flush());
  const std::string wire = take_pending(*p.client);
  const std::vector<tls_test::Record> records = records_of(wire);
  REQUIRE(records.size() == (want.size() + kMaxRecordPlaintext - 1) / kMaxRecordPlaintext);
  for (size_t i = 0; i + 1 < records.size(); ++i)
    CHECK(records[i].length == kFullRecord);
  tls_test::feed(*p.server, wire, SIZE_MAX);
  CHECK(read_all(*p.server) == want);
}

TEST_CASE("Flush::later keeps a partial record back until flush()") {
  Pair p;
  p.connect();
  REQUIRE(write(*p.client, "header", Flush::later));
  CHECK(p.client->pending_bytes() == 0);
  REQUIRE(write(*p.client, "payload", Flush::now));
  const std::vector<tls_test::Record> records = records_of(take_pending(*p.client));
  REQUIRE(records.size() == 1);
  CHECK(records[0].length == 13 + 17);
}

TEST_CASE("a smaller record size, from the options") {
  SessionOptions options;
  options.record_size = 4096;
  Pair p(options);
  p.connect();
  REQUIRE(write(*p.client, random_bytes(10 * 4096, 5)));
  const std::vector<tls_test::Record> records = records_of(take_pending(*p.client));
  REQUIRE(records.size() == 10);
  for (const tls_test::Record& r : records)
    CHECK(r.length == 4096 + 17);
}

TEST_CASE("pending() is a few large blocks, and consume() takes partial sends") {
  Pair p;
  p.connect();
  REQUIRE(write(*p.client, random_bytes(2u << 20, 6)));
  const size_t queued = p.client->pending_bytes();
  CHECK(queued == 128 * kMaxRecordWireBytes);
  const std::span<const iovec> iov = p.client->pending();
  CHECK(iov.size() <= queued / kLargeBlockBytes + 2);
  size_t sum = 0;
  for (const iovec& v : iov)
    sum += v.iov_len;
  CHECK(sum == queued);
  p.client->consume(12345);
  CHECK(p.client->pending_bytes() == queued - 12345);
  CHECK(p.client->pending(2).size() == 2);
}

TEST_CASE("close_notify in each direction on its own") {
  Pair p;
  p.connect();
  REQUIRE(write(*p.client, "last words", Flush::later));
  p.client->shutdown();  // flushes what was kept back, then close_notify
  CHECK(p.client->state() == TlsState::local_closed);
  CHECK_FALSE(write(*p.client, "more"));
  const std::vector<tls_test::Record> records = records_of([&] {
    const std::string wire = take_pending(*p.client);
    tls_test::feed(*p.server, wire, SIZE_MAX);
    return wire;
  }());
  CHECK(records.size() == 2);
  ReadStatus status;
  CHECK(read_all(*p.server, &status) == "last words");
  CHECK(status == ReadStatus::close_notify);
  CHECK(p.server->state() == TlsState::peer_closed);
  CHECK(p.server->read(nullptr, 0).status == ReadStatus::close_notify);

  // The server's direction is still open.
  CHECK(transfer(*p.server, *p.client, "reply") == "reply");
  p.server->shutdown();
  CHECK(p.server->state() == TlsState::closed);
  tls_test::feed(*p.client, take_pending(*p.server), SIZE_MAX);
  CHECK(read_all(*p.client, &status) == "");
  CHECK(status == ReadStatus::close_notify);
  CHECK(p.client->state() == TlsState::closed);
}

TEST_CASE("the client refuses a server with another identity, before sending its own") {
  Pair p;
  p.client->expect_peer(spiffe("node-a"));  // but the server is node-b
  const tls_test::HandshakeOutcome o = handshake(*p.client, *p.server);
  CHECK(o.client == HandshakeStatus::failed);
  CHECK(p.client->failure() ==
        "server identity is spiffe://td.test/ns/default/sa/node-b, "
        "expected spiffe://td.test/ns/default/sa/node-a");
  // The client answered the server's flight with an alert, not with its certificate.
  CHECK(o.server == HandshakeStatus::failed);
  CHECK(p.server->failure() == "the peer sent a fatal alert: bad_certificate");
}

TEST_CASE("the client refuses a server signed by another CA") {
  BlockPool pool;
  std::unique_ptr<Credentials> client_creds = tls_test::load("node-a");
  std::unique_ptr<Credentials> server_creds = tls_test::load("other-node", "ca");
  TlsSession client(*client_creds, Role::client, pool);
  TlsSession server(*server_creds, Role::server, pool);
  client.expect_peer(spiffe("other-node"));
  const tls_test::HandshakeOutcome o = handshake(client, server);
  CHECK(o.client == HandshakeStatus::failed);
  CHECK(client.failure() ==
        "server certificate refused: it is not signed by a trusted CA "
        "(X509 error 20 at chain depth 0)");
}

TEST_CASE("the server refuses a client signed by another CA") {
  BlockPool pool;
  std::unique_ptr<Credentials> client_creds = tls_test::load("other-node", "ca");
  std::unique_ptr<Credentials> server_creds = tls_test::load("node-b");
  TlsSession client(*client_creds, Role::client, pool);
  TlsSession server(*server_creds, Role::server, pool);
  client.expect_peer(spiffe("node-b"));
  const tls_test::HandshakeOutcome o = handshake(client, server);
  CHECK(o.server == HandshakeStatus::failed);
  CHECK(server.failure() ==
        "client certificate refused: it is not signed by a trusted CA "
        "(X509 error 20 at chain depth 0)");
  CHECK(server.peer_identity() == SpiffeId{});
  // In TLS 1.3 the client finishes first; it learns of the refusal from the server's alert.
  CHECK(o.client == HandshakeStatus::done);
  ReadStatus status;
  CHECK(read_all(client, &status) == "");
  CHECK(status == ReadStatus::failed);
  CHECK(client.failure() == "the peer sent a fatal alert: unknown_ca");
}

TEST_CASE("the server refuses a client without a certificate") {
  BlockPool pool;
  const tls_test::CertDir& d = tls_test::CertDir::get();
  WOLFSSL_CTX* ctx = tls_test::raw_client_context("", "", d.path("ca.crt"));
  std::unique_ptr<Credentials> server_creds = tls_test::load("node-b");
  TlsSession client(ctx, Role::client, pool);
  wolfSSL_CTX_free(ctx);  // the session holds its own reference
  TlsSession server(*server_creds, Role::server, pool);
  client.expect_peer(spiffe("node-b"));
  const tls_test::HandshakeOutcome o = handshake(client, server);
  CHECK(o.server == HandshakeStatus::failed);
  CHECK(server.failure() == "the client presented no certificate");
}

TEST_CASE("the server refuses a client whose certificate expired") {
  BlockPool pool;
  const tls_test::CertDir& d = tls_test::CertDir::get();
  WOLFSSL_CTX* ctx =
      tls_test::raw_client_context(d.path("expired.crt"), d.path("expired.key"), d.path("ca.crt"));
  std::unique_ptr<Credentials> server_creds = tls_test::load("node-b");
  TlsSession client(ctx, Role::client, pool);
  wolfSSL_CTX_free(ctx);
  TlsSession server(*server_creds, Role::server, pool);
  client.expect_peer(spiffe("node-b"));
  const tls_test::HandshakeOutcome o = handshake(client, server);
  CHECK(o.server == HandshakeStatus::failed);
  INFO(server.failure());
  CHECK(server.failure() ==
        "client certificate refused: the certificate expired (X509 error 14 at chain depth 0)");
}

TEST_CASE("ALPN: a client offering only other protocols is refused with an alert") {
  SessionOptions http1;
  http1.alpn = "http/1.1";
  Pair p(http1);
  const tls_test::HandshakeOutcome o = handshake(*p.client, *p.server);
  CHECK(o.server == HandshakeStatus::failed);
  CHECK(p.server->failure() == "the client offered ALPN protocols, none of them 'h2'");
  CHECK(o.client == HandshakeStatus::failed);
  CHECK(p.client->failure() == "the peer sent a fatal alert: no_application_protocol");
}

TEST_CASE("ALPN: a client offering none is refused") {
  // A client made directly with wolfSSL, as TlsSession always offers ALPN.
  BlockPool pool;
  const tls_test::CertDir& d = tls_test::CertDir::get();
  WOLFSSL_CTX* ctx =
      tls_test::raw_client_context(d.path("node-a.crt"), d.path("node-a.key"), d.path("ca.crt"));
  WOLFSSL* ssl = wolfSSL_new(ctx);
  struct Wire {
    std::string in, out;
  } wire;
  wolfSSL_SSLSetIORecv(ssl, [](WOLFSSL*, char* buf, int sz, void* ctx) {
    auto* w = static_cast<Wire*>(ctx);
    if (w->in.empty()) return int(WOLFSSL_CBIO_ERR_WANT_READ);
    const int n = std::min(sz, int(w->in.size()));
    std::memcpy(buf, w->in.data(), size_t(n));
    w->in.erase(0, size_t(n));
    return n;
  });
  wolfSSL_SSLSetIOSend(ssl, [](WOLFSSL*, char* buf, int sz, void* ctx) {
    static_cast<Wire*>(ctx)->out.append(buf, size_t(sz));
    return sz;
  });
  wolfSSL_SetIOReadCtx(ssl, &wire);
  wolfSSL_SetIOWriteCtx(ssl, &wire);
  std::unique_ptr<Credentials> server_creds = tls_test::load("node-b");
  TlsSession server(*server_creds, Role::server, pool);
  HandshakeStatus status = HandshakeStatus::in_progress;
  for (int round = 0; round < 10 && status == HandshakeStatus::in_progress; ++round) {
    wolfSSL_connect(ssl);
    tls_test::feed(server, wire.out, SIZE_MAX);
    wire.out.clear();
    status = server.handshake();
    wire.in += take_pending(server);
  }
  CHECK(status == HandshakeStatus::failed);
  CHECK(server.failure() == "the client did not offer ALPN 'h2' (no ALPN at all)");
  wolfSSL_free(ssl);
  wolfSSL_CTX_free(ctx);
}

TEST_CASE("a client session without an expected server identity does not start") {
  Pair p;
  TlsSession client(*p.client_creds, Role::client, p.pool);
  CHECK(client.handshake() == HandshakeStatus::failed);
  CHECK(client.failure().find("expect_peer") != std::string::npos);
  CHECK(client.pending_bytes() == 0);  // not even a ClientHello
}

TEST_CASE("a tampered record fails the connection with a reason") {
  Pair p;
  p.connect();
  REQUIRE(write(*p.client, "integrity matters"));
  std::string wire = take_pending(*p.client);
  wire[wire.size() - 3] ^= 1;  // inside the GCM tag
  tls_test::feed(*p.server, wire, SIZE_MAX);
  ReadStatus status;
  CHECK(read_all(*p.server, &status) == "");
  CHECK(status == ReadStatus::failed);
  CHECK(p.server->state() == TlsState::failed);
  CHECK(p.server->failure() ==
        "a record failed authentication: the ciphertext was corrupted or tampered with");
  CHECK_FALSE(write(*p.server, "no"));
  // The server tells the client why, with an alert.
  const std::vector<tls_test::Record> records = records_of(take_pending(*p.server));
  CHECK(records.size() == 1);
}

TEST_CASE("nothing can be read or written before the handshake") {
  Pair p;
  uint8_t buf[16];
  CHECK(p.server->read(buf, sizeof buf).bytes == 0);
  CHECK(p.server->read(buf, sizeof buf).status == ReadStatus::open);
  CHECK_FALSE(write(*p.client, "early"));
  CHECK(p.client->state() == TlsState::handshaking);
}

// The own record layer (SessionOptions::own_records) against wolfSSL's: each reads what the other
// seals, so the keys, nonces, header and inner content type are right by an independent reader.

namespace {

SessionOptions records(bool own, uint64_t key_update_records = uint64_t(1) << 24) {
  SessionOptions o;
  o.own_records = own;
  o.key_update_records = key_update_records;
  return o;
}

// A KeyUpdate record on the wire: header, the 5-byte message, its type byte, the tag.
constexpr size_t kKeyUpdateRecord = 5 + 5 + 1 + 16;

}  // namespace

TEST_CASE("own record layer and wolfSSL's read each other, both ways, 1 MiB byte-exact") {
  for (const bool client_own : {false, true})
    for (const bool server_own : {false, true}) {
      CAPTURE(client_own);
      CAPTURE(server_own);
      Pair p(records(client_own), records(server_own));
      p.connect();
      CHECK(p.client->own_records() == client_own);
      CHECK(p.server->own_records() == server_own);
      CHECK(std::string(p.client->cipher()) == "TLS13-AES128-GCM-SHA256");
      const std::string up = random_bytes(1 << 20, 7), down = random_bytes((1 << 20) + 13, 8);
      CHECK(transfer(*p.client, *p.server, up, 1500) == up);
      CHECK(transfer(*p.server, *p.client, down, 70000) == down);
      p.client->shutdown();
      tls_test::feed(*p.server, take_pending(*p.client), SIZE_MAX);
      ReadStatus status;
      CHECK(read_all(*p.server, &status) == "");
      CHECK(status == ReadStatus::close_notify);
    }
}

TEST_CASE("drain() hands over each record's plaintext in place, in order") {
  for (const bool own : {false, true}) {
    CAPTURE(own);
    Pair p(records(own), records(own));
    p.connect();
    const std::string data = random_bytes(300000, 9);
    REQUIRE(write(*p.client, data));
    tls_test::feed(*p.server, take_pending(*p.client), 4096);
    std::string got;
    const ReadStatus status = p.server->drain(
        [](void* arg, std::span<const uint8_t> plaintext) {
          static_cast<std::string*>(arg)->append(reinterpret_cast<const char*>(plaintext.data()),
                                                 plaintext.size());
          return true;
        },
        &got);
    CHECK(status == ReadStatus::open);
    CHECK(got == data);
  }
}

TEST_CASE("KeyUpdate asked for by the peer is answered, and data flows under the new keys") {
  // The asking side is each implementation in turn; the answering side is the own layer.
  for (const bool asker_own : {false, true}) {
    CAPTURE(asker_own);
    Pair p(records(asker_own), records(true));
    p.connect();
    CHECK(transfer(*p.client, *p.server, "before") == "before");
    REQUIRE(p.client->update_keys(true));
    tls_test::feed(*p.server, take_pending(*p.client), SIZE_MAX);
    CHECK(read_all(*p.server) == "");
    // The server answered with its own KeyUpdate (and nothing else).
    CHECK(p.server->pending_bytes() == kKeyUpdateRecord);
    const std::string after = random_bytes(100000, 10);
    CHECK(transfer(*p.server, *p.client, after) == after);
    CHECK(transfer(*p.client, *p.server, after) == after);
    CHECK(p.client->state() == TlsState::open);
    CHECK(p.server->state() == TlsState::open);
  }
}

TEST_CASE("the own layer moves to the next key every key_update_records records") {
  // Read by wolfSSL's layer: each KeyUpdate must be where and what RFC 8446 says.
  Pair p(records(true, 3), records(false));
  p.connect();
  const std::string data = random_bytes(20 * kMaxRecordPlaintext + 5, 11);
  REQUIRE(write(*p.client, data));
  const std::string wire = take_pending(*p.client);
  // 21 data records and a KeyUpdate after every third.
  CHECK(records_of(wire).size() == 21 + 7);
  tls_test::feed(*p.server, wire, 16000);
  CHECK(read_all(*p.server) == data);
  CHECK(p.server->state() == TlsState::open);
  CHECK(transfer(*p.server, *p.client, "back") == "back");
}

TEST_CASE("own layer: hostile records after the handshake fail the session with a reason") {
  struct Case {
    const char* name;
    std::string record;
    const char* failure;
  };
  const std::string big(5 + 16384 + 257, '\0');
  std::string overflow = big;
  overflow[0] = 23, overflow[1] = 3, overflow[2] = 3, overflow[3] = char(0x41), overflow[4] = 1;
  const std::string plain_handshake("\x16\x03\x03\x00\x05\x18\x00\x00\x01\x00", 10);
  const std::string short_record("\x17\x03\x03\x00\x03\x01\x02\x03", 8);
  const Case cases[] = {
      {"a record longer than 2^14 + 256", overflow, "the peer sent a record of 16641 bytes"},
      {"an unprotected KeyUpdate", plain_handshake,
       "the peer sent an unprotected record (type 22) after the handshake"},
      {"a record shorter than its tag", short_record, "a record failed authentication"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.name);
    Pair p(records(true), records(true));
    p.connect();
    tls_test::feed(*p.server, c.record, SIZE_MAX);
    ReadStatus status;
    CHECK(read_all(*p.server, &status) == "");
    CHECK(status == ReadStatus::failed);
    INFO(p.server->failure());
    CHECK(p.server->failure().rfind(c.failure, 0) == 0);
    // The server told the client with a fatal alert, which the client reads as such.
    tls_test::feed(*p.client, take_pending(*p.server), SIZE_MAX);
    CHECK(read_all(*p.client, &status) == "");
    CHECK(status == ReadStatus::failed);
    CHECK(p.client->failure().rfind("the peer sent a fatal alert", 0) == 0);
  }
}

TEST_CASE("own layer: a record cut anywhere waits for the rest") {
  Pair p(records(true), records(true));
  p.connect();
  REQUIRE(write(*p.client, "whole"));
  const std::string wire = take_pending(*p.client);
  for (size_t i = 0; i + 1 < wire.size(); ++i) {
    p.server->feed(reinterpret_cast<const uint8_t*>(wire.data()) + i, 1);
    ReadStatus status;
    CHECK(read_all(*p.server, &status) == "");
    CHECK(status == ReadStatus::open);
  }
  p.server->feed(reinterpret_cast<const uint8_t*>(wire.data()) + wire.size() - 1, 1);
  CHECK(read_all(*p.server) == "whole");
}

TEST_CASE("feed_borrowed(): records opened in the caller's memory, the rest kept by settle()") {
  Pair p;
  p.connect();
  const std::string data = random_bytes(200000, 12);
  REQUIRE(write(*p.client, data));
  const std::string wire = take_pending(*p.client);
  // Delivered in 3000-byte receives, each reused (overwritten) as soon as settle() returns, as
  // a ring buffer is given back to the kernel.
  std::string got;
  std::vector<uint8_t> buffer(3000);
  for (size_t i = 0; i < wire.size(); i += buffer.size()) {
    const size_t n = std::min(buffer.size(), wire.size() - i);
    std::memcpy(buffer.data(), wire.data() + i, n);
    p.server->feed_borrowed(buffer.data(), n);
    got += read_all(*p.server);
    p.server->settle();
    std::fill(buffer.begin(), buffer.end(), 0xee);
  }
  CHECK(got == data);
  CHECK(p.server->state() == TlsState::open);
  CHECK(p.server->inbound_bytes() == 0);
}
