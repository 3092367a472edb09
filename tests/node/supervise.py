# A supervisor that does what systemd does with socket activation and
# Restart=always: it binds the listening sockets itself, starts the command
# with them (fds 3.., LISTEN_FDS, LISTEN_PID, LISTEN_FDNAMES, as
# sd_listen_fds(3) reads them), and starts it again RESTART_SEC after it dies.
# The sockets outlive every process, so connections that arrive while none
# runs wait in the backlog instead of being refused.
# Usage: supervise.py PIDFILE RESTART_SEC NAME=tcp|udp:ADDR:PORT ... -- CMD ...
# PIDFILE holds the running command's pid. The command dies with this
# supervisor (PR_SET_PDEATHSIG).
import ctypes, fcntl, os, signal, socket, sys, time

pidfile, restart_sec = sys.argv[1], float(sys.argv[2])
split = sys.argv.index('--')
specs, cmd = sys.argv[3:split], sys.argv[split + 1:]

sockets, names = [], []
for spec in specs:
    name, rest = spec.split('=', 1)
    kind, addr = rest.split(':', 1)
    host, port = addr.rsplit(':', 1)
    host = host.strip('[]')
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM if kind == 'tcp' else socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((host, int(port)))
    if kind == 'tcp':
        s.listen(1024)
    sockets.append(s)
    names.append(name)

while True:
    child = os.fork()
    if child == 0:
        # The command dies with this supervisor, however it dies.
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        # Out of the way first: a socket's own fd may be one of 3.. itself.
        high = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD, 100) for s in sockets]
        for i, h in enumerate(high):
            os.dup2(h, 3 + i, inheritable=True)
            os.close(h)
        os.environ['LISTEN_FDS'] = str(len(sockets))
        os.environ['LISTEN_PID'] = str(os.getpid())
        os.environ['LISTEN_FDNAMES'] = ':'.join(names)
        os.execvp(cmd[0], cmd)
    with open(pidfile + '.tmp', 'w') as f:
        f.write(str(child))
    os.rename(pidfile + '.tmp', pidfile)
    _, status = os.waitpid(child, 0)
    sys.stderr.write('supervise: %s exited (status %d); restarting in %.1fs\n' % (cmd[0], status, restart_sec))
    time.sleep(restart_sec)
