#!/usr/bin/env node
// An independent HBONE peer for the interop tests, on Node.js's built-in http2 and tls modules
// (no npm packages). Reports what it sees as JSON lines on stdout.
//
//   node hbone_node.js server --listen 127.0.0.1:PORT --ca F --cert F --key F
//       HBONE server: mTLS (client certificate required), ALPN h2; every CONNECT stream is dialled
//       as TCP to its :authority, answered 200 (503 if the dial fails, 400 for a non-CONNECT
//       request) and relayed both ways: END_STREAM <-> FIN each way on its own, RST_STREAM <->
//       reset. Lines: {"event":"listening","port"}, {"event":"connect","id","authority",
//       "headers","peer_san","alpn","tls"}, {"event":"refused"...}, {"event":"closed","id","up",
//       "down","rst"}.
//
//   node hbone_node.js client --connect 127.0.0.1:PORT --ca F --cert F --key F
//        --stream AUTHORITY,SENDFILE [--stream ...] [--timeout-ms N]
//       HBONE client: one session, one CONNECT stream per --stream (all at once); each sends the
//       file's bytes then END_STREAM, and reads until the peer's END_STREAM. Lines:
//       {"event":"session","peer_san","alpn"}, {"event":"stream","index","status","sent_len",
//       "sent_sha256","recv_len","recv_sha256","ended","rst","error"}, {"event":"done","ok"}.
//       Exits 0 when every stream got 200 and ended cleanly, 1 otherwise.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const http2 = require('http2');
const net = require('net');

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function parseArgs(argv) {
  const a = {mode: argv[0], stream: []};
  for (let i = 1; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, '');
    const v = argv[i + 1];
    if (k === 'stream') a.stream.push(v);
    else a[k] = v;
  }
  return a;
}

function splitHostPort(s) {
  const i = s.lastIndexOf(':');
  let host = s.slice(0, i);
  if (host.startsWith('[')) host = host.slice(1, -1);
  return {host, port: Number(s.slice(i + 1))};
}

const {NGHTTP2_NO_ERROR, NGHTTP2_CANCEL, NGHTTP2_CONNECT_ERROR} = http2.constants;

// ---------------------------------------------------------------------------------------------
function server(a) {
  let nextId = 0;
  const srv = http2.createSecureServer({
    ca: fs.readFileSync(a.ca),
    cert: fs.readFileSync(a.cert),
    key: fs.readFileSync(a.key),
    requestCert: true,
    rejectUnauthorized: true,
    ALPNProtocols: ['h2'],
    minVersion: 'TLSv1.3',
    settings: {initialWindowSize: 4 << 20, maxConcurrentStreams: 200},
  });
  srv.on('sessionError', (e) => out({event: 'session_error', error: String(e)}));
  srv.on('tlsClientError', (e) => out({event: 'tls_client_error', error: String(e)}));
  srv.on('stream', (stream, headers) => {
    const id = ++nextId;
    const sock = stream.session.socket;
    let peerSan = null;
    try {
      peerSan = sock.getPeerCertificate().subjectaltname || null;
    } catch (e) {
      peerSan = 'error: ' + e;
    }
    const regular = {};
    for (const [k, v] of Object.entries(headers)) if (!k.startsWith(':')) regular[k] = v;
    const info = {event: 'connect', id, method: headers[':method'],
                  authority: headers[':authority'] || null, headers: regular, peer_san: peerSan,
                  alpn: sock.alpnProtocol, tls: sock.getProtocol ? sock.getProtocol() : null};
    if (headers[':method'] !== 'CONNECT' || !headers[':authority']) {
      out(Object.assign(info, {event: 'bad_request'}));
      stream.respond({':status': 400}, {endStream: true});
      return;
    }
    out(info);
    const {host, port} = splitHostPort(headers[':authority']);
    let up = 0, down = 0, answered = false, done = false;
    const t = net.connect({host, port, allowHalfOpen: true});
    const finish = (how) => {
      if (done) return;
      done = true;
      out({event: 'closed', id, up, down, how, rst: stream.rstCode === undefined ? null : stream.rstCode});
    };
    t.on('connect', () => {
      answered = true;
      if (stream.destroyed || stream.closed) {  // reset by the client while we dialled
        t.destroy();
        finish('client_reset_early');
        return;
      }
      stream.respond({':status': 200});
      stream.on('data', (b) => { up += b.length; });
      t.on('data', (b) => { down += b.length; });
      stream.pipe(t);   // END_STREAM -> FIN
      t.pipe(stream);   // FIN -> END_STREAM
    });
    t.on('error', (e) => {
      if (!answered) {
        answered = true;
        out({event: 'refused', id, authority: headers[':authority'], error: e.code});
        if (!stream.destroyed && !stream.closed) stream.respond({':status': 503}, {endStream: true});
        finish('refused');
        return;
      }
      // target reset -> RST_STREAM
      if (!stream.destroyed) stream.close(NGHTTP2_CONNECT_ERROR);
      finish('target_error ' + e.code);
    });
    t.on('close', () => { if (answered) setTimeout(() => finish('target_closed'), 50); });
    stream.on('aborted', () => {   // client reset -> TCP reset
      if (t.resetAndDestroy) t.resetAndDestroy(); else t.destroy();
      finish('client_reset');
    });
    stream.on('error', () => {});
    stream.on('close', () => {
      if (stream.rstCode !== NGHTTP2_NO_ERROR && !t.destroyed) {
        if (t.resetAndDestroy) t.resetAndDestroy(); else t.destroy();
      }
    });
  });
  const {host, port} = splitHostPort(a.listen);
  srv.listen(port, host, () => out({event: 'listening', port: srv.address().port}));
  process.on('SIGTERM', () => process.exit(0));
}

// ---------------------------------------------------------------------------------------------
function client(a) {
  const {host, port} = splitHostPort(a.connect);
  const session = http2.connect(`https://${host}:${port}`, {
    ca: fs.readFileSync(a.ca),
    cert: fs.readFileSync(a.cert),
    key: fs.readFileSync(a.key),
    ALPNProtocols: ['h2'],
    minVersion: 'TLSv1.3',
    checkServerIdentity: () => undefined,
    settings: {initialWindowSize: 4 << 20},
  });
  let left = a.stream.length;
  let ok = true;
  const timer = setTimeout(() => {
    out({event: 'done', ok: false, error: 'timeout'});
    process.exit(1);
  }, Number(a['timeout-ms'] || 60000));
  session.on('error', (e) => {
    out({event: 'session_error', error: String(e), code: e.code});
  });
  session.on('connect', () => {
    const sock = session.socket;
    out({event: 'session', peer_san: sock.getPeerCertificate().subjectaltname || null,
         alpn: sock.alpnProtocol, tls: sock.getProtocol()});
  });
  a.stream.forEach((spec, index) => {
    const [authority, file] = spec.split(',');
    const data = fs.readFileSync(file);
    const r = {event: 'stream', index, authority, status: null, sent_len: data.length,
               sent_sha256: crypto.createHash('sha256').update(data).digest('hex'),
               recv_len: 0, recv_sha256: null, ended: false, rst: null, error: null};
    const h = crypto.createHash('sha256');
    const req = session.request({':method': 'CONNECT', ':authority': authority},
                                {endStream: false});
    let reported = false;
    const report = () => {
      if (reported) return;
      reported = true;
      r.recv_sha256 = h.digest('hex');
      r.rst = req.rstCode === undefined ? null : req.rstCode;
      out(r);
      if (!(r.status === 200 && r.ended && !r.error)) ok = false;
      if (--left === 0) {
        clearTimeout(timer);
        out({event: 'done', ok});
        session.close(() => process.exit(ok ? 0 : 1));
        setTimeout(() => process.exit(ok ? 0 : 1), 2000).unref();
      }
    };
    req.on('response', (headers) => {
      r.status = headers[':status'];
      if (r.status !== 200) return;
      // write in pieces, with backpressure, then END_STREAM
      let off = 0;
      const pump = () => {
        while (off < data.length) {
          const piece = data.subarray(off, Math.min(off + 65536, data.length));
          off += piece.length;
          if (!req.write(piece)) {
            req.once('drain', pump);
            return;
          }
        }
        req.end();
      };
      pump();
    });
    req.on('data', (b) => { r.recv_len += b.length; h.update(b); });
    req.on('end', () => { r.ended = true; });
    req.on('error', (e) => { r.error = String(e); });
    req.on('close', report);
  });
}

const args = parseArgs(process.argv.slice(2));
if (args.mode === 'server') server(args);
else if (args.mode === 'client') client(args);
else {
  process.stderr.write('usage: hbone_node.js server|client ...\n');
  process.exit(2);
}
