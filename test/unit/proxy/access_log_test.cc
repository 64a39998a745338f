#include "ringtunnel/proxy/access_log.h"

#include <doctest/doctest.h>

using namespace ringtunnel::proxy;

TEST_CASE("an access line names both ends, the bytes each way and how it ended") {
  std::string out;
  append_access_line(out, {"127.0.0.1:15001",
                           "127.0.0.1:40000",
                           "127.0.0.1:8080",
                           123,
                           456,
                           12,
                           EndReason::client_reset,
                           1'764'320'400'123,
                           {},
                           {}});
  CHECK(out ==
        "access listener=127.0.0.1:15001 client=127.0.0.1:40000 target=127.0.0.1:8080 bytes_up=123 "
        "bytes_down=456 duration_ms=12 end=client_reset start=2025-11-28T09:00:00.123Z\n");
}

TEST_CASE("an HBONE stream's line names both identities before the start time") {
  std::string out;
  append_access_line(
      out, {"127.0.0.1:15001", "127.0.0.1:40000", "127.0.0.1:8080", 1, 2, 3, EndReason::refused,
            1'764'320'400'123, "spiffe://td/ns/a/sa/b", "spiffe://td/ns/c/sa/d"});
  CHECK(out ==
        "access listener=127.0.0.1:15001 client=127.0.0.1:40000 target=127.0.0.1:8080 bytes_up=1 "
        "bytes_down=2 duration_ms=3 end=refused src_identity=spiffe://td/ns/a/sa/b "
        "dst_identity=spiffe://td/ns/c/sa/d start=2025-11-28T09:00:00.123Z\n");
}

TEST_CASE("every end reason has its own name") {
  const EndReason all[] = {
      EndReason::closed,          EndReason::client_reset,    EndReason::target_reset,
      EndReason::connect_refused, EndReason::connect_timeout, EndReason::connect_error,
      EndReason::drain_timeout,   EndReason::error,           EndReason::refused,
      EndReason::denied,          EndReason::bad_request,     EndReason::peer_error};
  for (EndReason a : all)
    for (EndReason b : all)
      if (a != b) CHECK(to_string(a) != to_string(b));
}

TEST_CASE("a refused stream's reason comes last before the start time, quoted and escaped") {
  const AccessRecord rec{"127.0.0.1:15008",
                         "127.0.0.1:40000",
                         "127.0.0.1:9",
                         0,
                         0,
                         1,
                         EndReason::denied,
                         1'764'320'400'123,
                         "spiffe://td/ns/a/sa/b",
                         "spiffe://td/ns/c/sa/d"};
  std::string out;
  append_access_line(out, rec, "loopback target 127.0.0.1:9 is not in a loopback --allow-dest");
  CHECK(out ==
        "access listener=127.0.0.1:15008 client=127.0.0.1:40000 target=127.0.0.1:9 bytes_up=0 "
        "bytes_down=0 duration_ms=1 end=denied src_identity=spiffe://td/ns/a/sa/b "
        "dst_identity=spiffe://td/ns/c/sa/d reason=\"loopback target 127.0.0.1:9 is not in a "
        "loopback --allow-dest\" start=2025-11-28T09:00:00.123Z\n");
  // Whatever a reason holds, it cannot end its quotes early, add a field or a line.
  out.clear();
  append_access_line(out, rec, "a\" end=closed x=\\\"\n\r\x01\xff");
  CHECK(out.find(" reason=\"a\\\" end=closed x=\\\\\\\"\\x0a\\x0d\\x01\\xff\" start=") !=
        std::string::npos);
  CHECK(out.find('\n') == out.size() - 1);
  // No reason: no field (the line is as it always was).
  out.clear();
  append_access_line(out, rec);
  CHECK(out.find("reason=") == std::string::npos);
}
