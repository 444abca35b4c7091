// Echo over TCP in Java's two styles, run with JDK 17's single-file launcher (`java Echo.java`):
//
//   java Echo.java nio-server PORT CONNS        java Echo.java nio-client HOST:PORT CONNS BYTES
//   java Echo.java blocking-server PORT CONNS   java Echo.java blocking-client HOST:PORT CONNS BYTES
//
// nio: non-blocking ServerSocketChannel/SocketChannel on one Selector thread (as Netty and
// other event-driven Java servers do). blocking: java.net.ServerSocket/Socket, a thread per
// connection, and on the client a writer thread next to the reading one. The client opens
// CONNS connections at once, each sending BYTES deterministic bytes and checking the echo.
// Each end prints one JSON line when done (errors as "Type: message") and exits 1 on error.
import java.io.*;
import java.net.*;
import java.nio.ByteBuffer;
import java.nio.channels.*;
import java.security.MessageDigest;
import java.util.*;
import java.util.concurrent.*;

public class Echo {
    static final int CHUNK = 64 << 10;
    static final List<String> errors = Collections.synchronizedList(new ArrayList<>());

    // Deterministic per-connection bytes: both the writer and the checker make them.
    static byte[] payload(int conn, int n) {
        byte[] b = new byte[n];
        new Random(1000 + conn).nextBytes(b);
        return b;
    }

    static String err(Throwable e) {
        return e.getClass().getSimpleName() + ": " + e.getMessage();
    }

    static String sha256(byte[] b, int len) throws Exception {
        MessageDigest d = MessageDigest.getInstance("SHA-256");
        d.update(b, 0, len);
        return HexFormat.of().formatHex(d.digest());
    }

    public static void main(String[] a) throws Exception {
        String mode = a[0];
        int conns = Integer.parseInt(a[2]);
        Map<String, Object> out = new TreeMap<>();
        switch (mode) {
            case "nio-server" -> out.put("echoed_bytes", nioServer(Integer.parseInt(a[1]), conns));
            case "blocking-server" -> out.put("echoed_bytes", blockingServer(Integer.parseInt(a[1]), conns));
            default -> {
                String[] hp = a[1].split(":");
                InetSocketAddress to = new InetSocketAddress(hp[0], Integer.parseInt(hp[1]));
                int bytes = Integer.parseInt(a[3]);
                out.put("conns", mode.equals("nio-client") ? nioClient(to, conns, bytes) : blockingClient(to, conns, bytes));
            }
        }
        out.put("errors", new ArrayList<>(errors));
        StringBuilder s = new StringBuilder("{\"event\": \"done\"");
        out.forEach((k, v) -> s.append(", \"").append(k).append("\": ").append(json(v)));
        System.out.println(s.append("}"));
        System.exit(errors.isEmpty() ? 0 : 1);
    }

    static String json(Object v) {
        if (v instanceof Collection<?> c) {
            StringJoiner j = new StringJoiner(", ", "[", "]");
            c.forEach(x -> j.add(json(x)));
            return j.toString();
        }
        if (v instanceof Number) return v.toString();
        return "\"" + v.toString().replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }

    static void listening() {
        System.out.println("{\"event\": \"listening\"}");
        System.out.flush();
    }

    // One selector thread: accept, read into a per-connection buffer, write it back.
    static long nioServer(int port, int conns) throws Exception {
        Selector sel = Selector.open();
        ServerSocketChannel ls = ServerSocketChannel.open();
        ls.configureBlocking(false);
        ls.bind(new InetSocketAddress(port), 128);
        ls.register(sel, SelectionKey.OP_ACCEPT);
        listening();
        long echoed = 0;
        int accepted = 0, closed = 0;
        while (closed < conns) {
            sel.select();
            for (Iterator<SelectionKey> it = sel.selectedKeys().iterator(); it.hasNext(); ) {
                SelectionKey k = it.next();
                it.remove();
                try {
                    if (k.isAcceptable()) {
                        SocketChannel c = ls.accept();
                        if (c == null) continue;
                        c.configureBlocking(false);
                        c.register(sel, SelectionKey.OP_READ, ByteBuffer.allocate(CHUNK));
                        if (++accepted == conns) ls.close();
                        continue;
                    }
                    SocketChannel c = (SocketChannel) k.channel();
                    ByteBuffer buf = (ByteBuffer) k.attachment();
                    if (k.isWritable() || buf.position() > 0) {
                        buf.flip();
                        echoed += c.write(buf);
                        buf.compact();
                    }
                    if (k.isReadable() && buf.hasRemaining() && c.read(buf) < 0) {
                        // Peer's EOF: echo what is left, then half-close like it did.
                        buf.flip();
                        while (buf.hasRemaining()) echoed += c.write(buf);
                        c.shutdownOutput();
                        c.close();
                        closed++;
                        continue;
                    }
                    k.interestOps(buf.position() > 0 ? SelectionKey.OP_WRITE | SelectionKey.OP_READ : SelectionKey.OP_READ);
                } catch (IOException e) {
                    errors.add(err(e));
                    k.channel().close();
                    closed++;
                }
            }
        }
        return echoed;
    }

    static class NioConn {
        final int id;
        final byte[] data, got;
        int sent, received;
        NioConn(int id, int bytes) { this.id = id; data = payload(id, bytes); got = new byte[bytes]; }
    }

    // All connections on one selector: connect, write while reading, half-close, read to EOF.
    static List<String> nioClient(InetSocketAddress to, int conns, int bytes) throws Exception {
        Selector sel = Selector.open();
        String[] result = new String[conns];
        for (int i = 0; i < conns; i++) {
            SocketChannel c = SocketChannel.open();
            c.configureBlocking(false);
            c.connect(to);
            c.register(sel, SelectionKey.OP_CONNECT, new NioConn(i, bytes));
        }
        int open = conns;
        while (open > 0) {
            sel.select();
            for (Iterator<SelectionKey> it = sel.selectedKeys().iterator(); it.hasNext(); ) {
                SelectionKey k = it.next();
                it.remove();
                SocketChannel c = (SocketChannel) k.channel();
                NioConn n = (NioConn) k.attachment();
                try {
                    if (k.isConnectable()) {
                        c.finishConnect();
                        k.interestOps(SelectionKey.OP_READ | SelectionKey.OP_WRITE);
                        continue;
                    }
                    if (k.isWritable()) {
                        n.sent += c.write(ByteBuffer.wrap(n.data, n.sent, Math.min(CHUNK, n.data.length - n.sent)));
                        if (n.sent == n.data.length) {
                            c.shutdownOutput();
                            k.interestOps(SelectionKey.OP_READ);
                        }
                    }
                    if (k.isReadable()) {
                        int r = n.received < n.got.length ? c.read(ByteBuffer.wrap(n.got, n.received, n.got.length - n.received)) : c.read(ByteBuffer.allocate(1));
                        if (r > 0) n.received += r;
                        if (r < 0 || n.received > n.got.length) {
                            result[n.id] = verdict(n.data, n.got, n.received);
                            c.close();
                            open--;
                        }
                    }
                } catch (IOException e) {
                    result[n.id] = err(e);
                    errors.add(err(e));
                    c.close();
                    open--;
                }
            }
        }
        return new ArrayList<>(new TreeSet<>(Arrays.asList(result)));
    }

    static String verdict(byte[] data, byte[] got, int received) throws Exception {
        if (received == data.length && Arrays.equals(data, got)) return "intact";
        String v = "got " + received + " bytes, sha256 " + sha256(got, Math.min(received, got.length));
        errors.add(v);
        return v;
    }

    // Thread per connection: read and write back until EOF, then close.
    static long blockingServer(int port, int conns) throws Exception {
        ServerSocket ls = new ServerSocket(port, 128);
        listening();
        ExecutorService pool = Executors.newCachedThreadPool();
        List<Future<Long>> done = new ArrayList<>();
        for (int i = 0; i < conns; i++) {
            Socket s = ls.accept();
            done.add(pool.submit(() -> {
                long n = 0;
                try (s) {
                    InputStream in = s.getInputStream();
                    OutputStream o = s.getOutputStream();
                    byte[] buf = new byte[CHUNK];
                    for (int r; (r = in.read(buf)) > 0; n += r) o.write(buf, 0, r);
                    s.shutdownOutput();
                } catch (IOException e) {
                    errors.add(err(e));
                }
                return n;
            }));
        }
        long echoed = 0;
        for (Future<Long> f : done) echoed += f.get();
        pool.shutdown();
        return echoed;
    }

    // Per connection a reading thread and a writing thread on one blocking Socket.
    static List<String> blockingClient(InetSocketAddress to, int conns, int bytes) throws Exception {
        ExecutorService pool = Executors.newCachedThreadPool();
        List<Future<String>> done = new ArrayList<>();
        for (int i = 0; i < conns; i++) {
            int id = i;
            done.add(pool.submit(() -> {
                byte[] data = payload(id, bytes), got = new byte[bytes];
                try (Socket s = new Socket(to.getAddress(), to.getPort())) {
                    Future<?> w = pool.submit(() -> {
                        OutputStream o = s.getOutputStream();
                        for (int off = 0; off < data.length; off += CHUNK) o.write(data, off, Math.min(CHUNK, data.length - off));
                        s.shutdownOutput();
                        return null;
                    });
                    InputStream in = s.getInputStream();
                    int n = 0;
                    for (int r; n < got.length && (r = in.read(got, n, got.length - n)) > 0; ) n += r;
                    // Then EOF: anything more is wrong too.
                    if (n == got.length && in.read() >= 0) n++;
                    w.get();
                    return verdict(data, got, n);
                } catch (Exception e) {
                    Throwable t = e instanceof ExecutionException ? e.getCause() : e;
                    errors.add(err(t));
                    return err(t);
                }
            }));
        }
        TreeSet<String> result = new TreeSet<>();
        for (Future<String> f : done) result.add(f.get());
        pool.shutdown();
        return new ArrayList<>(result);
    }
}
