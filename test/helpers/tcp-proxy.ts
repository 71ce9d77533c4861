import net from 'node:net';

/** A TCP proxy in front of a port that a test can cut (every connection dropped, new ones refused) and restore. */
export interface CuttableProxy {
  port: number;
  /** Destroys every open connection and refuses new ones until restore(). */
  cut(): void;
  restore(): void;
  /**
   * A partition: every byte is held in both directions on open connections, and new connections
   * are accepted but never reach the target (nothing is refused, nothing answers), until restore().
   */
  blackhole(): void;
  /**
   * A silently dead path: every byte of the connections open now is dropped (read and thrown
   * away, so no sender backs up and notices), and neither end hears a FIN or RST (a close by one
   * end is not passed on). New connections work. `toServer` drops only what the clients send.
   */
  deadLink(direction?: 'both' | 'toServer'): void;
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
  let holed = false;
  /** Open pairs (client → upstream), for the black hole. */
  const pairs = new Map<net.Socket, net.Socket>();
  /** Connections accepted during a black hole: connected to the target only on restore(). */
  const held = new Set<net.Socket>();
  /** Clients of dead links (deadLink): a close of either end stays there. */
  const severed = new WeakSet<net.Socket>();
  const server = net.createServer((client) => {
    if (blocked) {
      client.destroy();
      return;
    }
    if (holed) {
      held.add(client);
      client.pause();
      client.on('error', () => client.destroy()).on('close', () => held.delete(client));
      return;
    }
    forward(client);
  });
  function forward(client: net.Socket): void {
    const upstream = net.connect(targetPort, '127.0.0.1');
    pairs.set(client, upstream);
    clients.add(client);
    client.on('close', () => clients.delete(client));
    open.add(client);
    open.add(upstream);
    upstreams.set(client, upstream);
    const drop = (side: net.Socket) => {
      if (severed.has(client)) {
        side.destroy();
        open.delete(side);
        return;
      }
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
      pairs.delete(client);
    };
    client.on('error', () => drop(client)).on('close', () => drop(client));
    upstream.on('error', () => drop(upstream)).on('close', () => drop(upstream));
    client.pipe(upstream);
    upstream.pipe(client);
    if (stalled) client.pause();
  }
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    cut: () => {
      blocked = true;
      holed = false;
      for (const s of open) s.destroy();
      open.clear();
      for (const c of held) c.destroy();
      held.clear();
    },
    blackhole: () => {
      holed = true;
      for (const [c, u] of pairs) {
        c.unpipe(u);
        u.unpipe(c);
        c.pause();
        u.pause();
      }
    },
    deadLink: (direction = 'both') => {
      for (const [c, u] of pairs) {
        severed.add(c);
        c.unpipe(u);
        c.on('data', () => {}).resume();
        if (direction === 'both') {
          u.unpipe(c);
          u.on('data', () => {}).resume();
        }
      }
      pairs.clear();
      clients.clear();
    },
    restore: () => {
      blocked = false;
      if (holed) {
        holed = false;
        for (const [c, u] of pairs) {
          if (!stalled) {
            c.pipe(u);
            c.resume();
          }
          u.pipe(c);
          u.resume();
        }
        for (const c of held) {
          held.delete(c);
          if (!c.destroyed) {
            forward(c);
            c.resume();
          }
        }
      }
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
    close: () =>
      new Promise<void>((r) => {
        for (const s of open) s.destroy();
        for (const c of held) c.destroy();
        server.close(() => r());
      }),
  };
}
