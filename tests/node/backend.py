# Test targets: one process serving several ports, each named (blue, green,
# ...): http:PORT:NAME, https:PORT:NAME (certificate <run>/NAME.pem and .key),
# tcp:PORT:NAME (an echo), grpc:PORT:NAME (gRPC over h2c: any unary method
# answers JSON bytes with its name, the method's path and the metadata). GET /health answers 500 while <run>/unhealthy-<port> exists; any
# other request is answered with JSON saying who answered and what arrived, with
# status 503 while <run>/fail-<port> exists, after a pause for /sleep/.../MS paths.
# GET /__count says how many requests the port took, how many were marked
# mirrored, and the last mirrored one's path and body length.
# A request with "Upgrade: websocket" is echoed back frame by frame.
import base64, hashlib, json, os, socket, struct, sys, threading, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

run = sys.argv[1]
host = sys.argv[2]

counts, counts_lock = {}, threading.Lock()

def headers(msg):
    # Repeated fields joined with ", " as one value, names lower-cased.
    out = {}
    for k, v in msg.items():
        k = k.lower()
        out[k] = out[k] + ',' + v if k in out else v
    return out

class Handler(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    # Headers and body in one write: with several small writes, Nagle and
    # delayed ACKs cost 40 ms per response.
    wbufsize = -1
    def log_message(self, *a):
        pass
    def setup(self):
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    def answer(self):
        port = self.server.server_address[1]
        if self.path == '/health':
            bad = os.path.exists(os.path.join(run, 'unhealthy-%d' % port))
            self.send_response(500 if bad else 200)
            self.send_header('content-length', '0')
            self.end_headers()
            self.wfile.flush()
            return
        if self.path == '/__count':
            with counts_lock:
                out = json.dumps(counts.get(port, {'count': 0, 'mirrored': 0})).encode()
            self.send_response(200)
            self.send_header('content-length', str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        if self.headers.get('upgrade', '').lower() == 'websocket':
            return self.websocket()
        n = int(self.headers.get('content-length') or 0)
        body = self.rfile.read(n) if n else b''
        mirrored = self.headers.get('x-trellis-mirrored') == 'true'
        with counts_lock:
            c = counts.setdefault(port, {'count': 0, 'mirrored': 0})
            c['count'] += 1
            if mirrored:
                c['mirrored'] += 1
                c['lastMirrored'] = {'path': self.path, 'method': self.command, 'body': len(body)}
        if self.path.startswith('/sleep/'):
            time.sleep(int(self.path.split('?')[0].rsplit('/', 1)[1]) / 1000)
        out = json.dumps({
            'name': self.server.name, 'port': port,
            'peer': self.client_address[0], 'method': self.command, 'path': self.path,
            'headers': headers(self.headers), 'body': len(body),
        }).encode()
        failing = os.path.exists(os.path.join(run, 'fail-%d' % port))
        self.send_response(503 if failing else 200)
        self.send_header('content-type', 'application/json')
        self.send_header('content-length', str(len(out)))
        self.end_headers()
        self.wfile.write(out)
        self.wfile.flush()
    do_GET = do_POST = do_PUT = do_DELETE = answer

    def websocket(self):
        key = self.headers['sec-websocket-key'].encode()
        accept = base64.b64encode(hashlib.sha1(key + b'258EAFA5-E914-47DA-95CA-C5AB0DC85B11').digest())
        self.send_response(101)
        self.send_header('upgrade', 'websocket')
        self.send_header('connection', 'Upgrade')
        self.send_header('sec-websocket-accept', accept.decode())
        self.end_headers()
        self.wfile.flush()
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                return
            op, n = head[0] & 0x0f, head[1] & 0x7f
            if n == 126:
                n = struct.unpack('!H', self.rfile.read(2))[0]
            mask = self.rfile.read(4) if head[1] & 0x80 else b'\0\0\0\0'
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(self.rfile.read(n)))
            if op == 8:
                return
            reply = b'echo:' + data
            self.wfile.write(bytes([0x81, len(reply)]) + reply)
            self.wfile.flush()

def serve(port, name, tls=False):
    srv = ThreadingHTTPServer((host, port), Handler)
    srv.daemon_threads = True
    srv.name = name
    if tls:
        # HTTPS with <run>/<name>.pem and .key.
        import ssl
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(os.path.join(run, name + '.pem'), os.path.join(run, name + '.key'))
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    srv.serve_forever()

def echo(port):
    # TCP echo, prefixed with who answered.
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(64)
    def one(c, peer):
        with c:
            while True:
                d = c.recv(4096)
                if not d:
                    return
                c.sendall(b'%s:%d:' % (peer[0].encode(), port) + d)
    while True:
        c, peer = s.accept()
        threading.Thread(target=one, args=(c, peer), daemon=True).start()

def grpc_serve(port, name):
    import grpc
    from concurrent import futures
    class Any(grpc.GenericRpcHandler):
        def service(self, details):
            def unary(request, context):
                meta = {k: v for k, v in context.invocation_metadata()}
                return json.dumps({'name': name, 'method': details.method, 'metadata': meta}).encode()
            return grpc.unary_unary_rpc_method_handler(unary)
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    srv.add_generic_rpc_handlers((Any(),))
    srv.add_insecure_port('%s:%d' % (host, port))
    srv.start()
    srv.wait_for_termination()

for spec in sys.argv[3:]:
    kind, port, name = spec.split(':')
    if kind == 'tcp':
        target, args = echo, (int(port),)
    elif kind == 'grpc':
        target, args = grpc_serve, (int(port), name)
    else:
        target, args = serve, (int(port), name, kind == 'https')
    threading.Thread(target=target, args=args, daemon=True).start()
print('ready', flush=True)
threading.Event().wait()
