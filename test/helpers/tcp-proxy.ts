import net from 'node:net';

/** A TCP proxy in front of a port that a test can cut (every connection dropped, new ones refused) and restore. */
export interface CuttableProxy {
  port: number;
  /** Destroys every open connection and refuses new ones until restore(). */
  cut(): void;
  restore(): void;
  /** Stops reading from the clients (the server sees nothing new; the client's socket backs up). */
  stall(): void;
  unstall(): void;
  connections(): number;
  close(): Promise<void>;
}

/** Starts a proxy on a free port forwarding to 127.0.0.1:`targetPort`. */
export async function startProxy(targetPort: number): Promise<CuttableProxy> {
  const open = new Set<net.Socket>();
  const clients = new Set<net.Socket>();
  let stalled = false;
  const upstreams = new WeakMap<net.Socket, net.Socket>();
  const upOf = (c: net.Socket) => upstreams.get(c)!;
  let blocked = false;
  const server = net.createServer((client) => {
    if (blocked) {
      client.destroy();
      return;
    }
    const upstream = net.connect(targetPort, '127.0.0.1');
    clients.add(client);
    client.on('close', () => clients.delete(client));
    open.add(client);
    open.add(upstream);
    upstreams.set(client, upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
    if (stalled) client.pause();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    cut: () => {
      blocked = true;
      for (const s of open) s.destroy();
      open.clear();
    },
    restore: () => {
      blocked = false;
    },
    stall: () => {
      stalled = true;
      for (const c of clients) {
        c.unpipe(upOf(c));
        c.pause();
      }
    },
    unstall: () => {
      stalled = false;
      for (const c of clients) {
        c.pipe(upOf(c));
        c.resume();
      }
    },
    connections: () => open.size / 2,
    close: () => new Promise<void>((r) => {
      for (const s of open) s.destroy();
      server.close(() => r());
    }),
  };
}
