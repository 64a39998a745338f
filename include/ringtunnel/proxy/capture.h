// Connections the host's capture rules redirect to ringtunnel (ztunnel's dedicated mode), routed
// by the workload config: outbound ones (--outbound-listen, 15001) by their original destination,
// inbound plaintext ones (--inbound-plaintext-listen, 15006) to the local workload under policy.
#pragma once

#include <string>

#include "ringtunnel/proxy/context.h"

namespace ringtunnel::proxy {

// Takes the store's newer snapshot, if there is one. True when it changed.
bool refresh_state(WorkerContext& ctx);

// A client accepted on --outbound-listen (admitted by the budgets), whose connection was going to
// its original destination: a service VIP (one of its endpoints, at the mapped port), a workload
// (HBONE to its ip:15008 expecting its SPIFFE ID, or plain TCP), or anything else (plain TCP to
// the original destination).
// `listener`: the address it was accepted on, as the flag named it (it outlives the connection).
void open_captured_outbound(WorkerContext& ctx, int fd, const std::string& listener);

// A client accepted on --inbound-plaintext-listen: its original destination must be an address
// of the local workload (not one of ringtunnel's own listeners), and the local workload's
// policies must allow it with no peer identity; then a relay to it. Refused: reset, and an
// access line (end=denied or bad_request, with the reason).
void open_captured_inbound(WorkerContext& ctx, int fd, const std::string& listener);

// The policies changed (a reload): every inbound HBONE stream and plaintext relay they now
// deny is reset (end=denied).
void judge_again(WorkerContext& ctx);

}  // namespace ringtunnel::proxy
