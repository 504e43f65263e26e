//! A TCP fault proxy between devices and the server, on its own tokio runtime: it can cut
//! connections at a random byte in either direction (mid-request or before the answer),
//! delay them, duplicate every request of a connection onto a shadow connection, and model a
//! slow link (shared bandwidth in each direction plus latency). It counts the bytes devices
//! send and receive.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};

/// What the proxy does to each new connection.
#[derive(Clone, Debug, Default)]
pub struct FaultConfig {
    /// Chance that a connection is cut.
    pub cut_probability: f64,
    /// A cut happens after a uniform number of bytes below this, device to server...
    pub cut_max_up: u64,
    /// ...or server to device (chosen with equal chance).
    pub cut_max_down: u64,
    /// Chance that a connection gets an extra delay on every chunk, up to `max_delay`.
    pub delay_probability: f64,
    pub max_delay: Duration,
    /// Chance that everything a device sends on a connection is also sent, a little later, on
    /// a second connection to the server whose answers are thrown away.
    pub duplicate_probability: f64,
    /// Bytes per second in each direction, shared by all connections (a slow link).
    pub bandwidth: Option<u64>,
    /// One-way latency added to every chunk (half the round trip).
    pub latency: Duration,
}

impl FaultConfig {
    /// No faults: a transparent proxy that counts bytes.
    pub fn clean() -> FaultConfig {
        FaultConfig::default()
    }

    /// The field link of the must-show tests: 50 kbit/s, 500 ms round trips, 5% of
    /// connections cut.
    pub fn field_link() -> FaultConfig {
        FaultConfig {
            cut_probability: 0.05,
            cut_max_up: 40_000,
            cut_max_down: 2_000,
            bandwidth: Some(50_000 / 8),
            latency: Duration::from_millis(250),
            ..FaultConfig::default()
        }
    }

    /// Frequent faults for randomized trials.
    pub fn hostile() -> FaultConfig {
        FaultConfig {
            cut_probability: 0.3,
            cut_max_up: 2_500,
            cut_max_down: 400,
            delay_probability: 0.2,
            max_delay: Duration::from_millis(30),
            duplicate_probability: 0.2,
            ..FaultConfig::default()
        }
    }
}

/// Counters since the proxy started (or since [`FaultProxy::reset_stats`]).
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Bytes devices sent (read from device connections).
    pub bytes_up: AtomicU64,
    /// Bytes devices received.
    pub bytes_down: AtomicU64,
    pub connections: AtomicU64,
    pub cuts: AtomicU64,
    pub duplicated_connections: AtomicU64,
    /// Chunks from devices that started a `POST /v1/push`.
    pub push_requests: AtomicU64,
}

struct Shared {
    config: Mutex<FaultConfig>,
    upstream: Mutex<SocketAddr>,
    stats: ProxyStats,
    /// When each direction of the shared link is next free (for the bandwidth model).
    link_free: [Mutex<Instant>; 2],
    /// Cuts every live connection when notified.
    cut_all: Notify,
    /// A cut for the next connection only: (direction, offset).
    next_cut: Mutex<Option<(usize, u64)>>,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

const UP: usize = 0;
const DOWN: usize = 1;

impl FaultProxy {
    /// Starts a proxy on 127.0.0.1 forwarding to `upstream`, on its own thread and runtime (so
    /// it works from synchronous and asynchronous tests alike).
    pub fn start(upstream: SocketAddr, config: FaultConfig) -> FaultProxy {
        let shared = Arc::new(Shared {
            config: Mutex::new(config),
            upstream: Mutex::new(upstream),
            stats: ProxyStats::default(),
            link_free: [Mutex::new(Instant::now()), Mutex::new(Instant::now())],
            cut_all: Notify::new(),
            next_cut: Mutex::new(None),
        });
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let s = shared.clone();
        std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .enable_all()
                    .build()
                    .expect("a runtime for the proxy");
                runtime.block_on(async move {
                    let listener = TcpListener::bind("127.0.0.1:0").await.expect("the proxy binds");
                    let _ = addr_tx.send(listener.local_addr().expect("the proxy's address"));
                    let accept = async {
                        loop {
                            let Ok((conn, _)) = listener.accept().await else { continue };
                            let s = s.clone();
                            tokio::spawn(async move { handle(conn, s).await });
                        }
                    };
                    tokio::select! {
                        _ = accept => {}
                        _ = stop_rx => {}
                    }
                });
                runtime.shutdown_background();
            })
            .expect("the proxy thread starts");
        let addr = addr_rx.recv().expect("the proxy started");
        FaultProxy { addr, shared, stop: Some(stop_tx) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_config(&self, config: FaultConfig) {
        *lock(&self.shared.config) = config;
    }

    pub fn config(&self) -> FaultConfig {
        lock(&self.shared.config).clone()
    }

    /// Points the proxy at another server address (after a restart on a new port).
    pub fn set_upstream(&self, upstream: SocketAddr) {
        *lock(&self.shared.upstream) = upstream;
    }

    pub fn stats(&self) -> &ProxyStats {
        &self.shared.stats
    }

    pub fn bytes_up(&self) -> u64 {
        self.shared.stats.bytes_up.load(Ordering::SeqCst)
    }

    pub fn bytes_down(&self) -> u64 {
        self.shared.stats.bytes_down.load(Ordering::SeqCst)
    }

    pub fn push_requests(&self) -> u64 {
        self.shared.stats.push_requests.load(Ordering::SeqCst)
    }

    pub fn cuts(&self) -> u64 {
        self.shared.stats.cuts.load(Ordering::SeqCst)
    }

    /// Cuts every connection open now.
    pub fn cut_all(&self) {
        self.shared.cut_all.notify_waiters();
    }

    /// Cuts the first connection whose device has sent `offset` bytes on it.
    pub fn cut_next_up_at(&self, offset: u64) {
        *lock(&self.shared.next_cut) = Some((UP, offset));
    }

    pub fn reset_stats(&self) {
        let s = &self.shared.stats;
        for c in
            [&s.bytes_up, &s.bytes_down, &s.connections, &s.cuts, &s.duplicated_connections, &s.push_requests]
        {
            c.store(0, Ordering::SeqCst);
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What happens to one connection, drawn when it opens.
struct Plan {
    /// (direction, byte offset) at which to cut.
    cut: Option<(usize, u64)>,
    extra_delay: Duration,
    duplicate: bool,
    bandwidth: Option<u64>,
    latency: Duration,
}

fn plan(config: &FaultConfig) -> Plan {
    let mut rng = rand::rng();
    let cut = (config.cut_probability > 0.0 && rng.random_bool(config.cut_probability.min(1.0))).then(|| {
        if rng.random_bool(0.5) {
            (UP, rng.random_range(0..config.cut_max_up.max(1)))
        } else {
            (DOWN, rng.random_range(0..config.cut_max_down.max(1)))
        }
    });
    let extra_delay = if config.delay_probability > 0.0 && rng.random_bool(config.delay_probability.min(1.0))
    {
        Duration::from_micros(rng.random_range(0..=config.max_delay.as_micros() as u64))
    } else {
        Duration::ZERO
    };
    let duplicate =
        config.duplicate_probability > 0.0 && rng.random_bool(config.duplicate_probability.min(1.0));
    Plan { cut, extra_delay, duplicate, bandwidth: config.bandwidth, latency: config.latency }
}

async fn handle(client: TcpStream, shared: Arc<Shared>) {
    shared.stats.connections.fetch_add(1, Ordering::SeqCst);
    let plan = plan(&lock(&shared.config));
    let upstream_addr = *lock(&shared.upstream);
    let Ok(server) = TcpStream::connect(upstream_addr).await else {
        // The server is down: the device sees the connection close.
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let shadow = if plan.duplicate {
        shared.stats.duplicated_connections.fetch_add(1, Ordering::SeqCst);
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        tokio::spawn(async move {
            let Ok(mut dup) = TcpStream::connect(upstream_addr).await else { return };
            let (mut dr, mut dw) = dup.split();
            let drain = async {
                let mut sink = vec![0u8; 16 * 1024];
                while let Ok(n) = dr.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            };
            let feed = async {
                let wait = rand::rng().random_range(0..20);
                tokio::time::sleep(Duration::from_millis(wait)).await;
                while let Some(chunk) = rx.recv().await {
                    if dw.write_all(&chunk).await.is_err() {
                        break;
                    }
                }
                let _ = dw.shutdown().await;
            };
            let _ = tokio::time::timeout(Duration::from_secs(30), async { tokio::join!(feed, drain) }).await;
        });
        Some(tx)
    } else {
        None
    };
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let cut = Arc::new(Notify::new());
    let up = pump(cr, sw, UP, &plan, shared.clone(), cut.clone(), shadow);
    let down = pump(sr, cw, DOWN, &plan, shared.clone(), cut.clone(), None);
    let cut_here = cut.clone();
    tokio::select! {
        _ = async { tokio::join!(up, down) } => {}
        _ = cut_here.notified() => {
            shared.stats.cuts.fetch_add(1, Ordering::SeqCst);
        }
        _ = shared.cut_all.notified() => {
            shared.stats.cuts.fetch_add(1, Ordering::SeqCst);
        }
    }
    // Dropping both halves of both sockets closes them.
}

/// Copies one direction: a reader task stamps chunks as they arrive, a writer delivers each
/// after the latency and the link's bandwidth allow, so latency is pipelined as on a real link.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    dir: usize,
    plan: &Plan,
    shared: Arc<Shared>,
    cut: Arc<Notify>,
    shadow: Option<mpsc::UnboundedSender<Vec<u8>>>,
) {
    let chunk_size = if plan.bandwidth.is_some() { 1024 } else { 16 * 1024 };
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(8);
    let cut_at = plan.cut.filter(|(d, _)| *d == dir).map(|(_, at)| at);
    let stats = &shared.stats;
    let reader = async {
        // Owned here, so the writer and the shadow see the end when the reader stops.
        let tx = tx;
        let shadow = shadow;
        let mut buf = vec![0u8; chunk_size];
        let mut seen = 0u64;
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let mut chunk = buf[..n].to_vec();
            if dir == UP {
                stats.bytes_up.fetch_add(n as u64, Ordering::SeqCst);
                if find(&chunk, b"POST /v1/push") {
                    stats.push_requests.fetch_add(1, Ordering::SeqCst);
                }
                if let Some(s) = &shadow {
                    let _ = s.send(chunk.clone());
                }
            } else {
                stats.bytes_down.fetch_add(n as u64, Ordering::SeqCst);
            }
            // A one-shot cut armed for whichever connection first gets this far.
            let armed = if dir == UP && cut_at.is_none() {
                let mut next = lock(&shared.next_cut);
                match *next {
                    Some((UP, at)) if seen + n as u64 >= at => next.take().map(|(_, at)| at),
                    _ => None,
                }
            } else {
                None
            };
            if let Some(at) = cut_at.or(armed) {
                if seen + n as u64 >= at {
                    chunk.truncate((at - seen) as usize);
                    let _ = tx.send((Instant::now(), chunk)).await;
                    let _ = tx.send((Instant::now(), Vec::new())).await; // the cut marker
                    return;
                }
            }
            seen += n as u64;
            if tx.send((Instant::now(), chunk)).await.is_err() {
                break;
            }
        }
    };
    let writer = async {
        let delay = plan.latency + plan.extra_delay;
        while let Some((at, chunk)) = rx.recv().await {
            if chunk.is_empty() {
                // Deliver what came before the cut point, then cut the whole connection.
                cut.notify_one();
                return;
            }
            let due = at + delay;
            let now = Instant::now();
            if due > now {
                tokio::time::sleep(due - now).await;
            }
            if let Some(bps) = plan.bandwidth {
                let ends = {
                    let mut free = lock(&shared.link_free[dir]);
                    let start = (*free).max(Instant::now());
                    let end = start + Duration::from_secs_f64(chunk.len() as f64 / bps.max(1) as f64);
                    *free = end;
                    end
                };
                let now = Instant::now();
                if ends > now {
                    tokio::time::sleep(ends - now).await;
                }
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

fn find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
