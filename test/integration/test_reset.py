#!/usr/bin/env python3
"""A reset on one side becomes a reset on the other.

client-reset: after 100000 bytes up and 50000 bytes down have been exchanged,
the client closes with SO_LINGER {1,0} (RST). The target, blocked in recv, must
get ConnectionResetError (not EOF) within 3 s. Access log: end=client_reset,
bytes_up=100000, bytes_down=50000.

target-reset: the mirror image; the client must get ConnectionResetError;
end=target_reset.

client-reset-mid-download / target-reset-mid-upload: the far side streams
data continuously; the near side reads 1 MiB and resets. The streaming side's
send/recv must fail within 3 s (the proxy tears the connection down instead of
buffering on), and the access log says client_reset / target_reset."""

import os
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (CHUNK, Proxy, TargetServer, check, check_entry, connect,  # noqa: E402
                     expect_reset, fail, fmt_addr, forward_arg, free_port, gen_bytes, log,
                     recv_exact, reset_close, run_tests, sock_addr_str)

TIMEOUT = 20.0
PROMPT = 3.0


def handler_result(target, res, done, key):
    """res[key], once the target's handler has finished. target.join() alone may not wait
    for it: the accept thread registers a handler's thread only after starting it, so the
    handler can already be serving (and the client done) while join() finds nothing to
    wait for. The handler sets `done` when it ends, however it ends."""
    if not done.wait(TIMEOUT):
        fail("the target's handler still running %.0f s later" % TIMEOUT)
    target.check_errors()   # the handler's own failure, if it failed
    check(key in res, "the target's handler ended without a result (%s)" % key)
    return res[key]


def with_proxy(handler, body):
    target = TargetServer(handler, conn_timeout=TIMEOUT)
    try:
        listen = ("127.0.0.1", free_port())
        proxy = Proxy(["--forward", forward_arg(listen, target.addr)], listens=[listen])
        body(proxy, listen, target)
        proxy.stop_ok()
    finally:
        target.close()


def quiet_reset_case(resetter):
    UP, DOWN = 100000, 50000
    up, down = gen_bytes(21, UP), gen_bytes(22, DOWN)
    res = {}
    done = threading.Event()

    def handler(conn, peer):
        try:
            check(recv_exact(conn, UP) == up, "target: upstream data differs")
            conn.sendall(down)
            if resetter == "target":
                time.sleep(0.2)   # let the client see the data first
                reset_close(conn)
            else:
                res["target_wait"] = expect_reset(conn, PROMPT, "target")
                conn.close()
        finally:
            done.set()

    def body(proxy, listen, target):
        s = connect(listen, TIMEOUT)
        try:
            me = sock_addr_str(s.getsockname())
            s.sendall(up)
            check(recv_exact(s, DOWN) == down, "client: downstream data differs")
            if resetter == "client":
                reset_close(s)
                wait = handler_result(target, res, done, "target_wait")
                log("client reset after %d up / %d down; target got ConnectionResetError"
                    " after %.2f s" % (UP, DOWN, wait))
            else:
                w = expect_reset(s, PROMPT, "client")
                log("target reset after %d up / %d down; client got ConnectionResetError"
                    " after %.2f s" % (UP, DOWN, w))
                if not done.wait(TIMEOUT):
                    fail("the target's handler still running %.0f s later" % TIMEOUT)
                target.check_errors()
        finally:
            s.close()
        e = proxy.wait_access([me], timeout=5)[me]
        check_entry(e, listener=fmt_addr(*listen), target=fmt_addr(*target.addr),
                    bytes_up=UP, bytes_down=DOWN, end=resetter + "_reset")
        log("access log: bytes_up=%d bytes_down=%d end=%s_reset" % (UP, DOWN, resetter))

    with_proxy(handler, body)


def streaming_reset_case(resetter):
    """The side that does NOT reset streams until its socket fails."""
    MIB = 1024 * 1024
    blob = gen_bytes(23, CHUNK)
    res = {}
    done = threading.Event()

    def stream_until_error(sock, who):
        sent = 0
        end = time.monotonic() + TIMEOUT
        try:
            while time.monotonic() < end:
                sock.sendall(blob)
                sent += len(blob)
        except (ConnectionResetError, BrokenPipeError) as e:
            return sent, type(e).__name__
        except socket.timeout:
            pass
        fail("%s streamed %d bytes and its send never failed after the other side reset"
             % (who, sent))

    def handler(conn, peer):
        try:
            if resetter == "client":
                recv_exact(conn, 1)          # the client says hello first
                res["stream"] = stream_until_error(conn, "target")
                res["t1"] = time.monotonic()
            else:
                recv_exact(conn, MIB)
                res["reset_at"] = time.monotonic()
                reset_close(conn)
        finally:
            done.set()

    def body(proxy, listen, target):
        s = connect(listen, TIMEOUT)
        try:
            me = sock_addr_str(s.getsockname())
            if resetter == "client":
                s.sendall(b"x")
                recv_exact(s, MIB)
                t_reset = time.monotonic()
                reset_close(s)
                dt = handler_result(target, res, done, "t1") - t_reset
                check(dt <= PROMPT, "target's send failed only %.1f s after the client reset" % dt)
                log("client reset after reading 1 MiB; target's send failed (%s) %.2f s later"
                    % (res["stream"][1], dt))
            else:
                sent, err = stream_until_error(s, "client")
                t_fail = time.monotonic()
                dt = t_fail - handler_result(target, res, done, "reset_at")
                check(dt <= PROMPT, "client's send failed only %.1f s after the target reset" % dt)
                log("target reset after reading 1 MiB; client's send failed (%s) %.2f s later"
                    % (err, dt))
        finally:
            s.close()
        e = proxy.wait_access([me], timeout=5)[me]
        check_entry(e, listener=fmt_addr(*listen), target=fmt_addr(*target.addr),
                    end=resetter + "_reset")
        moved = e["bytes_down"] if resetter == "client" else e["bytes_up"]
        check(moved >= MIB, "access log says only %d bytes were relayed towards the %s, which"
              " read %d" % (moved, resetter, MIB))
        log("access log: end=%s_reset, %d bytes relayed towards the %s (>= 1 MiB it read)"
            % (resetter, moved, resetter))

    with_proxy(handler, body)


if __name__ == "__main__":
    run_tests("reset", [
        ("client-reset", lambda: quiet_reset_case("client")),
        ("target-reset", lambda: quiet_reset_case("target")),
        ("client-reset-mid-download", lambda: streaming_reset_case("client")),
        ("target-reset-mid-upload", lambda: streaming_reset_case("target")),
    ], 100)
