#include "ringtunnel/proxy/connection_streams.h"

#include "ringtunnel/net/address.h"
#include "ringtunnel/proxy/admission.h"
#include "ringtunnel/proxy/context.h"
#include "ringtunnel/proxy/hbone_connection.h"
#include "ringtunnel/proxy/hbone_stream.h"
#include "ringtunnel/proxy/log.h"

namespace ringtunnel::proxy {

void ConnectionStreams::attach_waiting() {
  std::vector<HboneStream*> waiting;
  waiting.swap(waiting_);
  for (HboneStream* s : waiting)
    s->attach(conn_);
}

void ConnectionStreams::end_waiting() {
  std::vector<HboneStream*> waiting;
  waiting.swap(waiting_);
  for (HboneStream* s : waiting)
    s->end(EndReason::peer_error, true);
}

void ConnectionStreams::held_released() {
  if (held_ && --held_ == 0) idle_since_ns_ = ctx_.now();
}

HboneStream* ConnectionStreams::stream_of(int32_t id) const {
  return static_cast<HboneStream*>(conn_.h2().stream_owner(id));
}

void ConnectionStreams::on_connect_request(int32_t id, const net::Endpoint& target,
                                           std::span<const h2::Header> headers) {
  h2::H2Session& h2 = conn_.h2();
  if (ctx_.budgets.inbound_stream_refusal(held_, ctx_.live_streams())) {
    h2.submit_response(id, 503);
    conn_.schedule();
    return;
  }
  // Decided before any socket exists: a refused target is never dialled.
  // With a workload config the config decides, never --allow-dest: without the local workload
  // in this worker's snapshot (it should not happen: the store checks it at every load), refuse.
  Admission admission =
      ctx_.config.config_path.empty()
          ? admit(target, ctx_.config, conn_.session().peer_identity(), ctx_.identity->identity())
      : ctx_.state && ctx_.local
          ? admit_mesh(target, ctx_.config, *ctx_.state, *ctx_.local, conn_.info().peer,
                       &conn_.session().peer_identity(), ctx_.identity->identity())
          : Admission(Verdict::not_local, "the local workload is not in this worker's config");
  if (!admission.dry_run.empty())
    log_line(dry_run_line(ctx_.id, admission,
                          net::format_sockaddr(conn_.info().peer.addr(), conn_.info().peer.length),
                          conn_.session().peer_identity().to_string(), target.to_string()));
  HboneStream* s = ctx_.new_stream();
  if (!s) {
    h2.submit_response(id, 503);
    return;
  }
  ++held_;
  s->open_inbound(conn_, id, target, headers, std::move(admission));
}

void ConnectionStreams::on_response(int32_t id, int status) {
  if (HboneStream* s = stream_of(id)) s->on_h2_response(status);
}

void ConnectionStreams::on_data(int32_t id, const uint8_t* data, size_t size) {
  HboneStream* s = stream_of(id);
  if (!s || s->ending()) {
    conn_.h2().consume(id, size);  // nobody will send it: hand the window back now
    return;
  }
  s->on_h2_data(conn_, data, size);
}

void ConnectionStreams::on_end_stream(int32_t id) {
  if (HboneStream* s = stream_of(id)) s->on_h2_end_stream();
}

void ConnectionStreams::on_reset(int32_t id, uint32_t code) {
  if (HboneStream* s = stream_of(id)) s->on_h2_reset(conn_, code);
}

void ConnectionStreams::on_stream_closed(int32_t id) {
  HboneStream* s = stream_of(id);
  if (!s) return;
  if (open_) --open_;
  if (!open_ && !conn_.info().inbound) idle_since_ns_ = ctx_.now();
  s->on_h2_closed();
}

// A buffer goes back to the kernel only once no byte of it is referenced: the stream releases
// by address (lent_payloads.h).
void ConnectionStreams::on_payload_released(int32_t id, std::span<const uint8_t> piece, bool) {
  if (HboneStream* s = stream_of(id)) s->on_h2_payload_released(piece);
}

void ConnectionStreams::on_goaway(int32_t, uint32_t) {
  // Streams above the last id get on_reset(kRefusedStream); the connection takes no new ones,
  // which HboneConnection::accepts_stream() sees through goaway_received().
}

}  // namespace ringtunnel::proxy
