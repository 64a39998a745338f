// One line per closed connection: who, where, how many bytes each way, how long, how it ended.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "ringtunnel/proxy/log.h"
#include "ringtunnel/proxy/outcome.h"

namespace ringtunnel::proxy {

struct AccessRecord {
  std::string_view listener;
  std::string_view client;
  std::string_view target;
  uint64_t bytes_up = 0;    // client -> target
  uint64_t bytes_down = 0;  // target -> client
  uint64_t duration_ms = 0;
  EndReason end = EndReason::none;
  int64_t start_unix_ms = 0;
  std::string_view src_identity;  // HBONE: the SPIFFE IDs of the two proxies, else empty
  std::string_view dst_identity;

  // What only the JSON record (--log-format json) shows. The proxy reports for the source
  // workload (outbound: its connections out) or for the destination (inbound: connections to
  // it): bytes_sent and bytes_recv are that workload's, and `direction` says which.
  enum class Direction : uint8_t { outbound, inbound };
  Direction direction = Direction::outbound;
  std::string_view dst_addr = {};     // HBONE: the address dialled or arrived on; empty: `target`
  std::string_view hbone_addr = {};   // HBONE: the CONNECT authority (the target); else empty
  std::string_view dst_service = {};  // the destination service's hostname, when one was resolved
  // From the workload config (--config) by address, filled by the worker; empty when unknown.
  // (Each has a default member initializer, so that records written positionally, up to the
  // identities, still initialise every field.)
  std::string_view src_workload = {}, src_namespace = {}, dst_workload = {}, dst_namespace = {};
};

// Appends "access listener=... client=... target=... bytes_up=N bytes_down=N duration_ms=N
// end=REASON [src_identity=ID dst_identity=ID] [reason="TEXT"] start=ISO8601\n" to `out`.
//
// One record is always one line of exactly these fields, separated by single spaces, whatever
// the strings in it hold (the client of an inbound HBONE stream is what the peer's Forwarded
// header says). A string value (listener, client, target, identities) is printed as it is when
// every byte of it is printable ASCII other than space, '"', '\' and '=' (addresses, SPIFFE IDs
// and listener texts always are; an empty value prints empty). Otherwise it is printed in double
// quotes, with '"' as \" and '\' as \\, and every other byte outside '!'..'~', and '=', as \xNN
// (two lowercase hex digits). So no value holds a space, an '=' or a line break, and a value that
// starts with '"' is an escaped one. For example, a Forwarded client "1.2.3.4 end=closed" prints
//   client="1.2.3.4\x20end\x3dclosed"
//
// `reason` (why a stream was refused before it was dialled; none if empty) is ringtunnel's own
// text: it is always quoted, spaces kept, with '"' and '\\' escaped by a backslash and other bytes
// outside printable ASCII as \xNN.
void append_access_line(std::string& out, const AccessRecord& record, std::string_view reason = {});
// Appends the record as one JSON object and a newline, with the access-log field names of
// Istio's ztunnel so that its dashboards and queries work unchanged:
//   {"level":"info","time":"2024-05-01T12:00:00.123Z","scope":"access",
//    "message":"connection complete","src.addr":"10.0.0.1:41234","src.workload":"sleep",
//    "src.namespace":"default","src.identity":"spiffe://...","dst.addr":"10.0.0.2:15008",
//    "dst.hbone_addr":"10.0.0.2:8080","dst.service":"echo.default.svc.cluster.local",
//    "dst.workload":"echo","dst.namespace":"default","dst.identity":"spiffe://...",
//    "direction":"outbound","bytes_sent":120,"bytes_recv":4096,"duration":"15ms"}
// A field without a value (no workload config, not HBONE, no service) is left out. A record
// that did not end in a clean close has "level":"error" and an "error" field: the end reason
// and, when there is one, why (`reason`), e.g. "denied: no Allow policy matches". "time" is
// when the connection ended. Strings go through append_json_string (log.h): always valid JSON,
// well-formed UTF-8 kept, control bytes and malformed UTF-8 as \u00XX, so one record is one
// line whatever the peer sent.
void append_access_json(std::string& out, const AccessRecord& record, std::string_view reason = {});

// Appends one string value as append_access_line prints it.
void append_log_value(std::string& out, std::string_view value);

// Where the lines go. Workers batch their lines and hand each batch to a LogSink, whose writer
// thread does the writing: a worker never waits for the log.
class AccessLog {
 public:
  // "-" for standard error (through `stderr_sink`, so access lines and operational messages
  // keep their order), "off", or a path opened for appending. Returns "" or why not.
  std::string open(const std::string& where, LogSink& stderr_sink);
  // Starts the writer of an access-log file (standard error's belongs to its owner).
  std::string start();
  // Writes what is queued for the file and stops its writer (LogSink::stop).
  bool stop(int timeout_ms);
  bool enabled() const { return sink_ != nullptr; }
  void write(std::string& batch);  // queues and clears; never blocks

 private:
  LogSink* sink_ = nullptr;
  std::unique_ptr<LogSink> file_;
};

}  // namespace ringtunnel::proxy
