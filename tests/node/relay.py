# A TCP relay that keeps every byte it passes, both ways, in one file:
#   relay.py LISTEN_HOST:PORT TARGET_HOST:PORT OUTFILE
# Prints "relaying" once it listens. What a network observer between a node
# and the control plane would see.
import socket, sys, threading

listen, target, out = sys.argv[1], sys.argv[2], sys.argv[3]
lock = threading.Lock()
log = open(out, 'ab', buffering=0)

def addr(s):
    host, port = s.rsplit(':', 1)
    return host, int(port)

def pipe(src, dst):
    try:
        while True:
            data = src.recv(16384)
            if not data:
                break
            with lock:
                log.write(data)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(addr(listen))
server.listen(64)
print('relaying', flush=True)
while True:
    client, _ = server.accept()
    try:
        upstream = socket.create_connection(addr(target), timeout=5)
        upstream.settimeout(None)
    except OSError:
        client.close()
        continue
    threading.Thread(target=pipe, args=(client, upstream), daemon=True).start()
    threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
