"""An OpenSSL-based HTTPS client (Python's ssl module) for tests/tls_rotation.rs.

Usage: ssl_client.py CAFILE URL BODYFILE STOPFILE
Posts BODYFILE to URL over a NEW TLS connection each time (every request does a full
handshake and chain verification against CAFILE, which may hold several CAs) until
STOPFILE exists (after its first answer it prints "started"), then prints one JSON line: {"ok": N, "failed": M, "errors": [...]}.
"""
import http.client
import json
import os
import ssl
import sys
import urllib.parse

cafile, url, bodyfile, stopfile = sys.argv[1:5]
u = urllib.parse.urlsplit(url)
body = open(bodyfile, "rb").read()
ctx = ssl.create_default_context(cafile=cafile)
ok, failed, errors = 0, 0, []
while not os.path.exists(stopfile) and ok + failed < 20000:
    conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=10)
    try:
        conn.request("POST", u.path + ("?" + u.query if u.query else ""), body,
                     {"content-type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        if resp.status == 200 and b'"allowed":true' in data:
            ok += 1
            if ok == 1:
                print("started", flush=True)
        else:
            failed += 1
            errors.append("status %d" % resp.status)
    except Exception as e:  # every failure counts, with its message
        failed += 1
        errors.append(repr(e))
    finally:
        conn.close()
print(json.dumps({"ok": ok, "failed": failed, "errors": sorted(set(errors))[:5]}))
