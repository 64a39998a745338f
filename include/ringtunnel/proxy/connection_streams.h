// The streams of one HBONE connection, as its HTTP/2 session sees them: it receives the session's
// events (h2::SessionEvents) and passes each stream's to that HboneStream, admits inbound
// CONNECTs (budgets, then admission), keeps outbound streams that wait for the handshake, and
// counts what the connection's idle and pool decisions need.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "ringtunnel/h2/session.h"
#include "ringtunnel/net/address.h"

namespace ringtunnel::proxy {

class HboneConnection;
class HboneStream;
class WorkerContext;

class ConnectionStreams final : public h2::SessionEvents {
 public:
  ConnectionStreams(WorkerContext& ctx, HboneConnection& conn) : ctx_(ctx), conn_(conn) {}
  ConnectionStreams(const ConnectionStreams&) = delete;
  ConnectionStreams& operator=(const ConnectionStreams&) = delete;

  // Outbound streams waiting for the handshake: each sends its CONNECT once it is done
  // (attach_waiting), or ends with peer_error if the connection fails first (end_waiting).
  void add_waiting(HboneStream& s) { waiting_.push_back(&s); }
  size_t waiting() const { return waiting_.size(); }
  void attach_waiting();
  void end_waiting();

  // Streams with an id on the connection (counted from attached() to the session's close).
  void attached() { ++open_; }
  uint32_t open() const { return open_; }
  // Inbound: streams accepted and not yet released (their TCP side may still be draining after
  // the session closed them), counted against the session's stream limit.
  void held_released();
  uint32_t held() const { return held_; }
  // Since when the connection has had no stream (0: not idle yet).
  uint64_t idle_since() const { return idle_since_ns_; }
  void idle_from(uint64_t now) { idle_since_ns_ = now; }

  // h2::SessionEvents
  void on_connect_request(int32_t id, const net::Endpoint& target,
                          std::span<const h2::Header> headers) override;
  void on_response(int32_t id, int status) override;
  void on_data(int32_t id, const uint8_t* data, size_t size) override;
  void on_end_stream(int32_t id) override;
  void on_reset(int32_t id, uint32_t code) override;
  void on_stream_closed(int32_t id) override;
  void on_payload_released(int32_t id, std::span<const uint8_t> piece, bool sent) override;
  void on_goaway(int32_t last_stream_id, uint32_t code) override;

 private:
  HboneStream* stream_of(int32_t id) const;

  WorkerContext& ctx_;
  HboneConnection& conn_;
  std::vector<HboneStream*> waiting_;
  uint32_t open_ = 0;
  uint32_t held_ = 0;
  uint64_t idle_since_ns_ = 0;
};

}  // namespace ringtunnel::proxy
