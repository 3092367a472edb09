# Steady load on a node while it restarts: runs until the file STOP exists,
# then prints one JSON report. Usage: steady.py URL DNS_ADDR NAME STOP
#   keep-alive   2 threads, GETs on one connection each (reopened when the
#                proxy answers `Connection: close`)
#   per-request  2 threads, a new connection for every GET
#   upload       POSTs of 256 KiB, each sent slowly over ~3 s
#   websocket    one WebSocket, a message every 0.2 s, each echo checked;
#                a clean close frame reopens it, anything else is an error
#   dns          a UDP query for NAME every 20 ms, answered with an address
# Every failure is an error: refused, reset, truncated, a non-200, a wrong
# echo, an unanswered query. The report: {"ok": {kind: n}, "errors": [...],
# "refused": how many errors were refused connections, "max_gap_ms": the longest time without a successful GET (keep-alive or
# per-request), "ws_clean_closes": n}
import base64, http.client, json, os, socket, struct, sys, threading, time
from urllib.parse import urlparse

url, dns_addr, name, stop_file = sys.argv[1:5]
u = urlparse(url)
host, port = u.hostname, u.port or 80
dns_host, dns_port = dns_addr.rsplit(':', 1)

lock = threading.Lock()
ok = {}
errors = []
successes = []  # monotonic times of successful HTTP requests
ws_clean_closes = 0

# A test that fails before it writes STOP leaves no load running for long.
deadline = time.monotonic() + 300

def stopped():
    return os.path.exists(stop_file) or time.monotonic() > deadline

def success(kind):
    with lock:
        ok[kind] = ok.get(kind, 0) + 1
        if kind in ('keep-alive', 'per-request'):
            successes.append(time.monotonic())

def error(kind, what):
    with lock:
        errors.append('%s: %s' % (kind, what))

def keep_alive():
    c = http.client.HTTPConnection(host, port, timeout=10)
    while not stopped():
        try:
            c.request('GET', '/keep-alive')
            r = c.getresponse()
            body = r.read()
            if r.status != 200 or b'"name"' not in body:
                error('keep-alive', 'status %d' % r.status)
            else:
                success('keep-alive')
            if r.getheader('connection', '').lower() == 'close':
                c.close()  # the next request opens a new connection
        except Exception as e:
            error('keep-alive', repr(e))
            c.close()
            time.sleep(0.05)

def per_request():
    while not stopped():
        c = http.client.HTTPConnection(host, port, timeout=10)
        try:
            c.request('GET', '/per-request', headers={'connection': 'close'})
            r = c.getresponse()
            r.read()
            if r.status != 200:
                error('per-request', 'status %d' % r.status)
            else:
                success('per-request')
        except Exception as e:
            error('per-request', repr(e))
            time.sleep(0.05)
        finally:
            c.close()

def upload():
    size, chunks = 256 * 1024, 30
    while not stopped():
        c = http.client.HTTPConnection(host, port, timeout=30)
        try:
            c.putrequest('POST', '/upload')
            c.putheader('content-length', str(size))
            c.putheader('connection', 'close')
            c.endheaders()
            piece = size // chunks
            sent = 0
            for i in range(chunks):
                n = piece if i < chunks - 1 else size - sent
                c.send(b'u' * n)
                sent += n
                time.sleep(0.1)
            r = c.getresponse()
            body = json.loads(r.read())
            if r.status != 200 or body.get('body') != size:
                error('upload', 'status %d, %r bytes arrived' % (r.status, body.get('body')))
            else:
                success('upload')
        except Exception as e:
            error('upload', repr(e))
        finally:
            c.close()

def ws_frame(data):
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
    return bytes([0x81, 0x80 | len(data)]) + mask + masked

def ws_read(s):
    head = b''
    while len(head) < 2:
        more = s.recv(2 - len(head))
        if not more:
            return None, None
        head += more
    op, n = head[0] & 0x0f, head[1] & 0x7f
    data = b''
    while len(data) < n:
        more = s.recv(n - len(data))
        if not more:
            return None, None
        data += more
    return op, data

def websocket():
    global ws_clean_closes
    while not stopped():
        s = socket.create_connection((host, port), timeout=10)
        try:
            key = base64.b64encode(os.urandom(16)).decode()
            s.sendall(('GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
                       'Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n' % (host, key)).encode())
            head = b''
            while b'\r\n\r\n' not in head:
                more = s.recv(4096)
                if not more:
                    raise Exception('closed during the upgrade')
                head += more
            if b' 101 ' not in head.split(b'\r\n')[0]:
                raise Exception('upgrade answered %r' % head.split(b'\r\n')[0])
            n = 0
            while not stopped():
                n += 1
                msg = ('m%d' % n).encode()
                s.sendall(ws_frame(msg))
                op, data = ws_read(s)
                if op == 8:
                    with lock:
                        ws_clean_closes += 1
                    break
                if data != b'echo:' + msg:
                    raise Exception('echo %r for %r' % (data, msg))
                success('websocket')
                time.sleep(0.2)
            else:
                s.sendall(bytes([0x88, 0x80]) + os.urandom(4))
        except Exception as e:
            error('websocket', repr(e))
            time.sleep(0.05)
        finally:
            s.close()

def dns():
    q = 0
    labels = b''.join(bytes([len(p)]) + p.encode() for p in name.rstrip('.').split('.')) + b'\0'
    while not stopped():
        q = (q + 1) & 0xffff
        packet = struct.pack('!HHHHHH', q, 0x0100, 1, 0, 0, 0) + labels + struct.pack('!HH', 1, 1)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(1)
        try:
            s.sendto(packet, (dns_host, int(dns_port)))
            data, _ = s.recvfrom(4096)
            ident, flags, _, answers = struct.unpack('!HHHH', data[:8])
            if ident != q or flags & 0xf != 0 or answers < 1:
                error('dns', 'rcode %d, %d answers' % (flags & 0xf, answers))
            else:
                success('dns')
        except Exception as e:
            error('dns', repr(e))
        finally:
            s.close()
        time.sleep(0.02)

threads = [threading.Thread(target=f) for f in
           (keep_alive, keep_alive, per_request, per_request, upload, websocket, dns)]
for t in threads:
    t.start()
for t in threads:
    t.join()
times = sorted(successes)
gap = max((b - a for a, b in zip(times, times[1:])), default=0)
# Refused: nothing accepted the connection. Everything else (reset, closed
# early, timed out) is a request some process had taken.
refused = sum(1 for e in errors if 'ConnectionRefusedError' in e)
print(json.dumps({'ok': ok, 'errors': errors[:50], 'error_count': len(errors), 'refused': refused,
                  'max_gap_ms': round(gap * 1000, 1), 'ws_clean_closes': ws_clean_closes}))
