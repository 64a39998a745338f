#include "ringtunnel/proxy/destination.h"

namespace ringtunnel::proxy {

TcpTarget tcp_target(const config::Route& route) {
  return {route.target, &route.listen_text, &route.target_text};
}

namespace {

// The value of the `name=` element (name: lowercase) of a forwarded header, quotes removed;
// nullopt when there is none, it is empty, or its quotes do not balance.
std::optional<std::string_view> forwarded_element(std::string_view header, std::string_view name) {
  const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; };
  while (!header.empty()) {
    const size_t end = header.find(';');
    std::string_view element = header.substr(0, end);
    header = end == std::string_view::npos ? std::string_view() : header.substr(end + 1);
    while (!element.empty() && (element.front() == ' ' || element.front() == '\t'))
      element.remove_prefix(1);
    while (!element.empty() && (element.back() == ' ' || element.back() == '\t'))
      element.remove_suffix(1);
    if (element.size() <= name.size() || element[name.size()] != '=') continue;
    bool same = true;
    for (size_t i = 0; i < name.size(); ++i)
      same = same && lower(element[i]) == name[i];
    if (!same) continue;
    std::string_view value = element.substr(name.size() + 1);
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"')
      value = value.substr(1, value.size() - 2);
    else if (value.find('"') != std::string_view::npos)
      return std::nullopt;  // an unbalanced quote: malformed
    if (value.empty()) return std::nullopt;
    return value;
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::string_view> forwarded_for(std::string_view header) {
  return forwarded_element(header, "for");
}

std::optional<std::string_view> forwarded_host(std::string_view header) {
  return forwarded_element(header, "host");
}

}  // namespace ringtunnel::proxy
