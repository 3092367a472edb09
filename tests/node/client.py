# A client in the redirected cgroup. Commands (argv[1]):
#   count URL N [HEADER=VALUE ...]   N keep-alive GETs; prints JSON
#       {"names": {name: count}, "errors": k, "statuses": {...}, "last": <last answer>}
#   load URL SECONDS                 GETs on 4 connections for SECONDS; prints
#       {"ok": n, "errors": [...]} (every non-200 or failed request is an error)
#   ws URL MESSAGES PAUSE            a WebSocket: MESSAGES messages PAUSE s apart,
#       prints each echo
#   tcp HOST PORT TEXT               prints what the TCP echo sent back
#   raw HOST PORT HEX                sends the hex-decoded bytes as they are
#       and prints the first response: {"status", "error" (x-trellis-error),
#       "body"} (the body parsed as JSON when it is)
#   slow HOST PORT [BYTES]           sends BYTES (default half a request head)
#       and waits; prints how long until the proxy closed the connection
#   mapped VIP PORT PATH             one GET through an IPv6 socket to ::ffff:VIP, as
#       dual-stack clients (gRPC core, Java) connect; prints {"status", "name",
#       "peer"} (peer: what getpeername says)
#   request METHOD URL [HEADER=VALUE ...]  one request, redirects not followed;
#       prints {"status", "headers" (lower-case names, repeats joined with ","),
#       "body"} (the body parsed as JSON when it is)
#   grpc HOST:PORT METHOD...          one unary call per method path
#       (/package.Service/Method) with grpcio on one channel; prints a list of
#       {"reply": <the target's JSON>} or {"code": "UNAVAILABLE", "details": ...}
#   tls-hold URL CAFILE FLAG OUT     one TLS connection: a GET, prints "held",
#       waits for the file FLAG to exist, a second GET on the same connection;
#       writes {"first": {...}, "second": {...}} to OUT, each with status,
#       name and the certificate's subject CN
import base64, http.client, json, os, socket, sys, threading, time
from urllib.parse import urlparse

def conn(url):
    u = urlparse(url)
    target = (u.path or '/') + ('?' + u.query if u.query else '')
    return http.client.HTTPConnection(u.hostname, u.port or 80, timeout=10), target

cmd = sys.argv[1]
if cmd == 'count':
    url, n = sys.argv[2], int(sys.argv[3])
    headers = dict(h.split('=', 1) for h in sys.argv[4:])
    c, path = conn(url)
    names, statuses, errors, last = {}, {}, 0, None
    for _ in range(n):
        try:
            c.request('GET', path, headers=headers)
            r = c.getresponse()
            body = r.read()
            statuses[r.status] = statuses.get(r.status, 0) + 1
            if r.status == 200:
                last = json.loads(body)
                names[last['name']] = names.get(last['name'], 0) + 1
            else:
                last = {'status': r.status, 'headers': dict(r.getheaders()), 'body': body.decode(errors='replace')}
        except Exception as e:
            errors += 1
            last = {'exception': repr(e)}
            c.close()
            c, path = conn(url)
    print(json.dumps({'names': names, 'errors': errors, 'statuses': statuses, 'last': last}))
elif cmd == 'request':
    method, url = sys.argv[2], sys.argv[3]
    headers = dict(h.split('=', 1) for h in sys.argv[4:])
    c, path = conn(url)
    c.request(method, path, headers=headers)
    r = c.getresponse()
    body = r.read().decode(errors='replace')
    try:
        body = json.loads(body)
    except ValueError:
        pass
    got = {}
    for k, v in r.getheaders():
        k = k.lower()
        got[k] = got[k] + ',' + v if k in got else v
    print(json.dumps({'status': r.status, 'headers': got, 'body': body}))
elif cmd == 'grpc':
    import grpc
    out = []
    with grpc.insecure_channel(sys.argv[2]) as ch:
        for method in sys.argv[3:]:
            call = ch.unary_unary(method)
            try:
                out.append({'reply': json.loads(call(b'hello', timeout=10))})
            except grpc.RpcError as e:
                out.append({'code': e.code().name, 'details': e.details()})
    print(json.dumps(out))
elif cmd == 'load':
    url, seconds = sys.argv[2], float(sys.argv[3])
    end = time.time() + seconds
    ok, errors, lock = [0], [], threading.Lock()
    def worker():
        c, path = conn(url)
        while time.time() < end:
            try:
                c.request('GET', path)
                r = c.getresponse()
                body = r.read()
                with lock:
                    if r.status == 200:
                        ok[0] += 1
                    else:
                        errors.append('%d %s' % (r.status, body[:200]))
            except Exception as e:
                with lock:
                    errors.append(repr(e))
                c.close()
                c, path = conn(url)
    ts = [threading.Thread(target=worker) for _ in range(4)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    print(json.dumps({'ok': ok[0], 'errors': errors}))
elif cmd == 'ws':
    url, count, pause = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    u = urlparse(url)
    s = socket.create_connection((u.hostname, u.port or 80), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(('GET / HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
               'Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n' % (u.hostname, key)).encode())
    f = s.makefile('rb')
    status = f.readline().decode().strip()
    while f.readline() not in (b'\r\n', b''):
        pass
    print(status, flush=True)
    for i in range(count):
        msg = ('m%d' % i).encode()
        mask = os.urandom(4)
        s.sendall(bytes([0x81, 0x80 | len(msg)]) + mask + bytes(b ^ mask[j % 4] for j, b in enumerate(msg)))
        head = f.read(2)
        print(f.read(head[1] & 0x7f).decode(), flush=True)
        time.sleep(pause)
elif cmd == 'raw':
    s = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=10)
    s.sendall(bytes.fromhex(sys.argv[4]))
    r = http.client.HTTPResponse(s)
    r.begin()
    body = r.read().decode(errors='replace')
    try:
        body = json.loads(body)
    except ValueError:
        pass
    print(json.dumps({'status': r.status, 'error': r.getheader('x-trellis-error'), 'body': body}))
elif cmd == 'tcp':
    s = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=10)
    s.sendall(sys.argv[4].encode())
    print(s.recv(4096).decode())
elif cmd == 'slow':
    s = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=30)
    s.sendall(sys.argv[4].encode() if len(sys.argv) > 4 else b'GET / HTTP/1.1\r\nHost: x\r\n')
    t = time.time()
    try:
        d = s.recv(4096)
    except Exception:
        d = b''
    print(json.dumps({'closed_after': time.time() - t, 'said': d.decode(errors='replace')}))
elif cmd == 'tls-hold':
    import ssl
    url, cafile, flag, out = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
    u = urlparse(url)
    ctx = ssl.create_default_context(cafile=cafile)
    c = http.client.HTTPSConnection(u.hostname, u.port or 443, timeout=10, context=ctx)
    def get():
        try:
            c.request('GET', u.path or '/')
            r = c.getresponse()
            body = json.loads(r.read())
            cn = dict(x[0] for x in c.sock.getpeercert()['subject']).get('commonName')
            return {'status': r.status, 'name': body.get('name'), 'cn': cn}
        except Exception as e:
            return {'exception': repr(e)}
    first = get()
    print('held', flush=True)
    end = time.time() + 30
    while not os.path.exists(flag) and time.time() < end:
        time.sleep(0.05)
    second = get()
    with open(out + '.tmp', 'w') as f:
        json.dump({'first': first, 'second': second}, f)
    os.rename(out + '.tmp', out)
elif cmd == 'mapped':
    host, port, path = sys.argv[2], int(sys.argv[3]), sys.argv[4]
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(('::ffff:' + host, port))
    peer = s.getpeername()[0]
    s.sendall(('GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' % (path, host)).encode())
    data = b''
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b'\r\n\r\n')
    status = int(head.split(b' ')[1])
    name = json.loads(body).get('name') if status == 200 else None
    print(json.dumps({'status': status, 'name': name, 'peer': peer}))
