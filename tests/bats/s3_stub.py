"""A tiny S3 endpoint on 127.0.0.1 for fault tests: serves the files of one directory as the
objects of one bucket under one prefix (ListObjectsV2, HEAD, ranged GET with If-Match), and
injects faults.  Signatures are not checked (the real-server tests in s3.bats do that).

usage: s3_stub.py ROOT BUCKET PREFIX PORTFILE [--slowdown N] [--fail-key NAME] [--reset N]

--slowdown N   the first N ranged GETs of every object answer 503 SlowDown
--fail-key K   every GET of object K answers 500 InternalError
--reset N      the first N ranged GETs of every object close the connection mid-body
Writes the port it listens on to PORTFILE; logs one line per request to stderr.
"""
import argparse
import hashlib
import http.server
import os
import socketserver
import sys
import urllib.parse


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("bucket")
    ap.add_argument("prefix")
    ap.add_argument("portfile")
    ap.add_argument("--slowdown", type=int, default=0)
    ap.add_argument("--fail-key", default=None)
    ap.add_argument("--reset", type=int, default=0)
    a = ap.parse_args()
    counts = {}

    def objects():
        return sorted(n for n in os.listdir(a.root) if os.path.isfile(os.path.join(a.root, n)))

    def etag(name):
        with open(os.path.join(a.root, name), "rb") as f:
            return '"%s"' % hashlib.md5(f.read()).hexdigest()

    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            sys.stderr.write("stub: " + (fmt % args) + "\n")

        def send(self, code, body=b"", headers=()):
            self.send_response(code)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def error(self, code, s3code):
            self.send(code, ("<?xml version=\"1.0\"?><Error><Code>%s</Code></Error>" % s3code).encode())

        def key(self):
            u = urllib.parse.urlsplit(self.path)
            parts = urllib.parse.unquote(u.path).lstrip("/").split("/", 1)
            return parts[0], parts[1] if len(parts) > 1 else "", urllib.parse.parse_qs(u.query, keep_blank_values=True)

        def do_HEAD(self):
            self.do_GET()

        def do_GET(self):
            bucket, key, q = self.key()
            if bucket != a.bucket:
                return self.error(404, "NoSuchBucket")
            if key == "" and "list-type" in q:
                pre = q.get("prefix", [""])[0]
                items = ""
                for n in objects():
                    k = a.prefix + "/" + n
                    if k.startswith(pre) and "/" not in k[len(pre):]:
                        size = os.path.getsize(os.path.join(a.root, n))
                        items += ("<Contents><Key>%s</Key><Size>%d</Size><ETag>%s</ETag>"
                                  "<LastModified>2026-01-01T00:00:00.000Z</LastModified></Contents>"
                                  % (k, size, etag(n).replace('"', "&quot;")))
                body = ("<?xml version=\"1.0\"?><ListBucketResult><IsTruncated>false</IsTruncated>%s"
                        "</ListBucketResult>" % items).encode()
                return self.send(200, body, [("Content-Type", "application/xml")])
            if not key.startswith(a.prefix + "/") or key[len(a.prefix) + 1:] not in objects():
                return self.error(404, "NoSuchKey")
            name = key[len(a.prefix) + 1:]
            with open(os.path.join(a.root, name), "rb") as f:
                data = f.read()
            tag = etag(name)
            hdr = [("ETag", tag), ("Last-Modified", "Thu, 01 Jan 2026 00:00:00 GMT")]
            if self.command == "HEAD":
                self.send_response(200)
                for k, v in hdr:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                return
            im = self.headers.get("If-Match")
            if im is not None and im.strip('"') != tag.strip('"'):
                return self.error(412, "PreconditionFailed")
            if name == a.fail_key:
                return self.error(500, "InternalError")
            n = counts[name] = counts.get(name, 0) + 1
            if n <= a.slowdown:
                return self.error(503, "SlowDown")
            rng = self.headers.get("Range", "")
            lo, hi = 0, len(data) - 1
            if rng.startswith("bytes="):
                lo, hi = (int(x) for x in rng[6:].split("-"))
                hi = min(hi, len(data) - 1)
            body = data[lo:hi + 1]
            if n <= a.slowdown + a.reset:
                # promise the whole range, send half of it, hang up
                self.send_response(206)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Range", "bytes %d-%d/%d" % (lo, hi, len(data)))
                self.end_headers()
                self.wfile.write(body[:len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.send(206, body, hdr + [("Content-Range", "bytes %d-%d/%d" % (lo, hi, len(data)))])

    class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True

    srv = S(("127.0.0.1", 0), H)
    with open(a.portfile + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.replace(a.portfile + ".tmp", a.portfile)
    srv.serve_forever()


if __name__ == "__main__":
    main()
