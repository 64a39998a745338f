// The worker's objects: its tables of relays, HBONE connections and streams, and the pool of
// outbound connections. Data only; the objects themselves hold their logic.
#pragma once

#include "ringtunnel/proxy/hbone_connection.h"
#include "ringtunnel/proxy/hbone_stream.h"
#include "ringtunnel/proxy/outbound_pool.h"
#include "ringtunnel/proxy/relay.h"
#include "ringtunnel/proxy/slot_table.h"

namespace ringtunnel::proxy {

struct Objects {
  explicit Objects(const config::Config& config) : outbound(config) {}

  SlotTable<Relay> relays;
  SlotTable<HboneConnection> conns;
  SlotTable<HboneStream> streams;
  OutboundPool outbound;
};

}  // namespace ringtunnel::proxy
