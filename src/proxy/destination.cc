#include "ringtunnel/proxy/destination.h"

namespace ringtunnel::proxy {

TcpTarget tcp_target(const config::Route& route) {
  return {route.target, &route.listen_text, &route.target_text};
}

std::optional<std::string_view> forwarded_for(std::string_view header) {
  while (!header.empty()) {
    const size_t end = header.find(';');
    std::string_view element = header.substr(0, end);
    header = end == std::string_view::npos ? std::string_view() : header.substr(end + 1);
    while (!element.empty() && (element.front() == ' ' || element.front() == '\t'))
      element.remove_prefix(1);
    while (!element.empty() && (element.back() == ' ' || element.back() == '\t'))
      element.remove_suffix(1);
    const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; };
    if (element.size() < 4 || lower(element[0]) != 'f' || lower(element[1]) != 'o' ||
        lower(element[2]) != 'r' || element[3] != '=')
      continue;
    std::string_view value = element.substr(4);
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
      value = value.substr(1, value.size() - 2);
    else if (value.find('"') != std::string_view::npos)
      return std::nullopt;  // an unbalanced quote: malformed
    if (value.empty()) return std::nullopt;
    return value;
  }
  return std::nullopt;
}

}  // namespace ringtunnel::proxy
