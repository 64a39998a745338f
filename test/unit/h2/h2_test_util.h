// Test scaffolding for the HTTP/2 framer: an event recorder, a back-to-back pump between two
// sessions, a frame parser for what a session emits, and builders for hand-crafted frames.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ringtunnel/h2/session.h"

namespace ringtunnel::h2::test {

inline constexpr std::string_view kClientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

enum FrameType : uint8_t {
  kData = 0,
  kHeaders = 1,
  kPriority = 2,
  kRstStream = 3,
  kSettings = 4,
  kPing = 6,
  kGoaway = 7,
  kWindowUpdate = 8,
  kContinuation = 9,
};
enum FrameFlag : uint8_t { kEndStream = 1, kAck = 1, kEndHeaders = 4 };

inline uint32_t read32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}

struct Frame {
  uint32_t length = 0;
  uint8_t type = 0;
  uint8_t flags = 0;
  uint32_t stream = 0;
  std::vector<uint8_t> payload;  // not kept for DATA frames (only their length)
};

// Parses a byte stream of frames as it arrives, in pieces of any size.
class FrameParser {
 public:
  explicit FrameParser(bool expect_client_preface = false)
      : preface_left_(expect_client_preface ? kClientPreface.size() : 0) {}

  void add(const uint8_t* data, size_t size) {
    while (size > 0) {
      if (preface_left_ > 0) {
        const size_t take = std::min(size, preface_left_);
        preface_left_ -= take;
        data += take;
        size -= take;
        continue;
      }
      if (payload_left_ == 0 && header_have_ < 9) {
        const size_t take = std::min(size, size_t(9) - header_have_);
        std::memcpy(header_ + header_have_, data, take);
        header_have_ += take;
        data += take;
        size -= take;
        if (header_have_ < 9) continue;
        Frame f;
        f.length = uint32_t(header_[0]) << 16 | uint32_t(header_[1]) << 8 | header_[2];
        f.type = header_[3];
        f.flags = header_[4];
        f.stream = read32(header_ + 5) & 0x7fffffff;
        frames.push_back(f);
        payload_left_ = f.length;
        header_have_ = 0;
        continue;
      }
      const size_t take = std::min(size, payload_left_);
      Frame& f = frames.back();
      if (f.type != kData) f.payload.insert(f.payload.end(), data, data + take);
      if (f.type == kData && keep_data)
        data_of[f.stream].insert(data_of[f.stream].end(), data, data + take);
      payload_left_ -= take;
      data += take;
      size -= take;
    }
  }

  bool at_boundary() const { return preface_left_ == 0 && header_have_ == 0 && payload_left_ == 0; }

  std::vector<Frame> frames;
  // With keep_data: every DATA payload byte, per stream, in wire order.
  bool keep_data = false;
  std::map<uint32_t, std::vector<uint8_t>> data_of;

 private:
  size_t preface_left_;
  uint8_t header_[9] = {};
  size_t header_have_ = 0;
  size_t payload_left_ = 0;
};

inline std::vector<Frame> frames_of(const std::vector<uint8_t>& bytes, bool preface = false) {
  FrameParser p(preface);
  p.add(bytes.data(), bytes.size());
  return p.frames;
}

// The error code of the last GOAWAY among `frames`, if any.
inline std::optional<uint32_t> goaway_code(const std::vector<Frame>& frames) {
  for (auto it = frames.rbegin(); it != frames.rend(); ++it) {
    if (it->type == kGoaway && it->payload.size() >= 8) return read32(it->payload.data() + 4);
  }
  return std::nullopt;
}

inline std::optional<uint32_t> rst_code(const std::vector<Frame>& frames, uint32_t stream) {
  for (const Frame& f : frames) {
    if (f.type == kRstStream && f.stream == stream && f.payload.size() == 4) {
      return read32(f.payload.data());
    }
  }
  return std::nullopt;
}

// Takes everything `session` has to send, as the TLS writer would.
inline std::vector<uint8_t> drain(H2Session& session) {
  std::vector<uint8_t> bytes;
  for (;;) {
    const auto spans = session.pending();
    if (spans.empty()) break;
    size_t n = 0;
    for (const auto& s : spans) {
      bytes.insert(bytes.end(), s.begin(), s.end());
      n += s.size();
    }
    session.consume_output(n);
  }
  return bytes;
}

// Every event, in order, plus what a test wants to look at afterwards.
struct Recorder : SessionEvents {
  H2Session* session = nullptr;
  bool auto_consume = true;  // consume() every byte at once
  bool auto_accept = false;  // server: answer every CONNECT with 200
  std::vector<std::string> log;

  std::map<int32_t, std::vector<uint8_t>> data;
  std::map<int32_t, size_t> unconsumed;
  struct Released {
    int32_t stream;
    std::span<const uint8_t> piece;
    bool sent;
  };
  std::vector<Released> released_pieces;
  std::map<int32_t, size_t> released_sent;
  std::map<int32_t, size_t> released_unsent;
  std::map<int32_t, std::string> targets;
  std::map<int32_t, std::vector<std::pair<std::string, std::string>>> headers;
  std::map<int32_t, int> responses;
  std::map<int32_t, uint32_t> resets;
  std::vector<int32_t> ended;
  std::vector<int32_t> closed;
  std::vector<std::pair<int32_t, uint32_t>> goaways;
  std::vector<std::pair<int32_t, int>> rejected;

  void on_connect_request(int32_t id, const net::Endpoint& target,
                          std::span<const Header> hs) override {
    log.push_back("request " + std::to_string(id));
    targets[id] = target.to_string();
    for (const Header& h : hs)
      headers[id].emplace_back(h.name, h.value);
    if (auto_accept) session->submit_response(id, 200);
  }
  void on_response(int32_t id, int status) override {
    log.push_back("response " + std::to_string(id) + " " + std::to_string(status));
    responses[id] = status;
  }
  void on_data(int32_t id, const uint8_t* p, size_t n) override {
    auto& d = data[id];
    d.insert(d.end(), p, p + n);
    if (auto_consume) {
      session->consume(id, n);
    } else {
      unconsumed[id] += n;
    }
  }
  void on_end_stream(int32_t id) override {
    log.push_back("end " + std::to_string(id));
    ended.push_back(id);
  }
  void on_reset(int32_t id, uint32_t code) override {
    log.push_back("reset " + std::to_string(id) + " " + std::to_string(code));
    resets[id] = code;
  }
  void on_stream_closed(int32_t id) override {
    log.push_back("closed " + std::to_string(id));
    closed.push_back(id);
  }
  void on_payload_released(int32_t id, std::span<const uint8_t> piece, bool sent) override {
    log.push_back("released " + std::to_string(id) + (sent ? " sent" : " unsent"));
    (sent ? released_sent : released_unsent)[id] += piece.size();
    released_pieces.push_back({id, piece, sent});
  }
  void on_goaway(int32_t last, uint32_t code) override {
    log.push_back("goaway " + std::to_string(last) + " " + std::to_string(code));
    goaways.emplace_back(last, code);
  }
  void on_request_rejected(int32_t id, int status, std::string_view) override {
    log.push_back("rejected " + std::to_string(id) + " " + std::to_string(status));
    rejected.emplace_back(id, status);
  }

  // Gives back everything received so far.
  void consume_all() {
    for (auto& [id, n] : unconsumed) {
      session->consume(id, n);
      n = 0;
    }
  }
  bool saw(std::string_view entry) const {
    return std::find(log.begin(), log.end(), entry) != log.end();
  }
  // Position of `entry` in the log, or -1.
  long index_of(std::string_view entry) const {
    const auto it = std::find(log.begin(), log.end(), entry);
    return it == log.end() ? -1 : long(it - log.begin());
  }
};

// Moves what `from` has to send into `to`, recording the frames; returns the bytes moved.
inline size_t transfer(H2Session& from, H2Session& to, FrameParser* wire = nullptr) {
  const std::vector<uint8_t> bytes = drain(from);
  if (wire) wire->add(bytes.data(), bytes.size());
  if (!bytes.empty()) to.feed(bytes.data(), bytes.size());
  return bytes.size();
}

// Runs the two sessions against each other until neither has anything to say.
inline void pump(H2Session& client, H2Session& server, FrameParser* c2s = nullptr,
                 FrameParser* s2c = nullptr) {
  while (transfer(client, server, c2s) + transfer(server, client, s2c) > 0) {
  }
}

// ---- hand-crafted frames ----

inline void put_frame(std::vector<uint8_t>& out, uint8_t type, uint8_t flags, uint32_t stream,
                      const std::vector<uint8_t>& payload, uint32_t length = UINT32_MAX) {
  if (length == UINT32_MAX) length = uint32_t(payload.size());
  const uint8_t h[9] = {
      uint8_t(length >> 16), uint8_t(length >> 8),  uint8_t(length),      type,           flags,
      uint8_t(stream >> 24), uint8_t(stream >> 16), uint8_t(stream >> 8), uint8_t(stream)};
  out.insert(out.end(), h, h + 9);
  out.insert(out.end(), payload.begin(), payload.end());
}

inline std::vector<uint8_t> u32(uint32_t v) {
  return {uint8_t(v >> 24), uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)};
}

// HPACK integer with an N-bit prefix (RFC 7541 section 5.1); `first` holds the pattern bits.
inline void hpack_int(std::vector<uint8_t>& out, uint8_t first, int prefix_bits, size_t value) {
  const size_t max = (size_t(1) << prefix_bits) - 1;
  if (value < max) {
    out.push_back(uint8_t(first | value));
    return;
  }
  out.push_back(uint8_t(first | max));
  value -= max;
  while (value >= 128) {
    out.push_back(uint8_t(0x80 | (value & 0x7f)));
    value >>= 7;
  }
  out.push_back(uint8_t(value));
}

// A literal header field with a new name, not Huffman-coded; indexed into the dynamic table
// when `index` (RFC 7541 section 6.2.1), else without indexing (6.2.2).
inline void hpack_literal(std::vector<uint8_t>& out, std::string_view name, std::string_view value,
                          bool index = false) {
  out.push_back(index ? 0x40 : 0x00);
  hpack_int(out, 0, 7, name.size());
  out.insert(out.end(), name.begin(), name.end());
  hpack_int(out, 0, 7, value.size());
  out.insert(out.end(), value.begin(), value.end());
}

inline std::vector<uint8_t> connect_block(std::string_view authority) {
  std::vector<uint8_t> b;
  hpack_literal(b, ":method", "CONNECT");
  hpack_literal(b, ":authority", authority);
  return b;
}

// What a client sends first: the preface and an empty SETTINGS.
inline std::vector<uint8_t> client_start() {
  std::vector<uint8_t> out(kClientPreface.begin(), kClientPreface.end());
  put_frame(out, kSettings, 0, 0, {});
  return out;
}

}  // namespace ringtunnel::h2::test
