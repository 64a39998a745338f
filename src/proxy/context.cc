#include "ringtunnel/proxy/context.h"

#include <fmt/format.h>

#include "ringtunnel/proxy/log.h"

namespace ringtunnel::proxy {

void WorkerContext::access(const AccessRecord& record, std::string_view reason) {
  append_access_line(log_batch, record, reason);
}

void WorkerContext::log_bug(std::string_view what) {
  log_line(LogLevel::error, fmt::format("ringtunnel: worker {}: internal error: {}", id, what));
}

void WorkerContext::unexpected(std::string_view owner, Op op, int res) {
  log_bug(fmt::format("{}: completion of {} (res {})", owner, to_string(op), res));
}

std::string_view to_string(Op op) {
  switch (op) {
    case Op::none:
      return "none";
    case Op::connect:
      return "connect";
    case Op::connect_timeout:
      return "connect_timeout";
    case Op::recv:
      return "recv";
    case Op::send:
      return "send";
    case Op::shutdown:
      return "shutdown";
    case Op::cancel:
      return "cancel";
    case Op::close:
      return "close";
    case Op::poll:
      return "poll";
    case Op::splice_in:
      return "splice_in";
    case Op::splice_out:
      return "splice_out";
    case Op::accept:
      return "accept";
    case Op::wake:
      return "wake";
  }
  return "?";
}

}  // namespace ringtunnel::proxy
