//! A TCP proxy in front of the test server. It reads the client's LDAP messages (plain
//! `ldap://` only), records every SearchRequest (base, scope, paged or not), and can cut the
//! connection that carries a chosen subtree search instead of forwarding it (a real fault in
//! one page fetch, seen by the client as a dropped connection), or stall it (the request is
//! never answered, as behind a dead network path).

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PAGED_OID: &[u8] = b"1.2.840.113556.1.4.319";

/// One search request seen by the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    pub base: String,
    /// 0 base object, 1 one level, 2 subtree.
    pub scope: u8,
    /// Carried the paged results control.
    pub paged: bool,
    /// The proxy cut the connection instead of forwarding this request.
    pub cut: bool,
    /// The proxy held this request back for good, leaving the connection open.
    pub stalled: bool,
}

impl Search {
    pub fn is_subtree(&self) -> bool {
        self.scope == 2
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Cut,
    Stall,
}

#[derive(Debug, Default)]
struct State {
    searches: Mutex<Vec<Search>>,
    /// The fault for the n-th subtree search from now (1 = the next one).
    fault_in: Mutex<Option<(usize, Fault)>>,
}

#[derive(Debug, Clone)]
pub struct Proxy {
    pub url: String,
    state: Arc<State>,
}

impl Proxy {
    /// Listens on a free local port and forwards every connection to `upstream`
    /// (an `ldap://host:port` URL).
    pub async fn start(upstream: &str) -> Proxy {
        let target = upstream
            .strip_prefix("ldap://")
            .unwrap_or_else(|| panic!("the proxy forwards plain ldap:// only, not {upstream}"))
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ldap://{}", listener.local_addr().unwrap());
        let state = Arc::new(State::default());
        let st = Arc::clone(&state);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(up) = TcpStream::connect(&target).await else {
                    continue; // the client sees its connection closed
                };
                tokio::spawn(relay(client, up, Arc::clone(&st)));
            }
        });
        Proxy { url, state }
    }

    /// Every search request so far, in order.
    pub fn searches(&self) -> Vec<Search> {
        self.state.searches.lock().unwrap().clone()
    }

    /// The search requests after the first `from`.
    pub fn searches_since(&self, from: usize) -> Vec<Search> {
        self.searches().split_off(from)
    }

    /// Cuts the connection that carries the `n`-th subtree search from now (1 = the next),
    /// without forwarding that request.
    pub fn cut_at_subtree_search(&self, n: usize) {
        assert!(n >= 1);
        *self.state.fault_in.lock().unwrap() = Some((n, Fault::Cut));
    }

    /// Never forwards the `n`-th subtree search from now (1 = the next) nor anything after
    /// it on that connection, and keeps the connection open: the request goes unanswered.
    pub fn stall_at_subtree_search(&self, n: usize) {
        assert!(n >= 1);
        *self.state.fault_in.lock().unwrap() = Some((n, Fault::Stall));
    }
}

async fn relay(client: TcpStream, up: TcpStream, state: Arc<State>) {
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = up.into_split();
    let down = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut ur, &mut cw).await;
    });
    while let Ok(Some(frame)) = read_frame(&mut cr).await {
        match state.inspect(&frame) {
            Some(Fault::Cut) => break,
            Some(Fault::Stall) => {
                // hold everything open and answer nothing, until the test ends
                std::future::pending::<()>().await;
            }
            None => {}
        }
        if uw.write_all(&frame).await.is_err() {
            break;
        }
    }
    // both directions go: the client sees its connection closed
    down.abort();
}

impl State {
    /// Records a search request; the fault to inject instead of forwarding it, if any.
    fn inspect(&self, frame: &[u8]) -> Option<Fault> {
        let mut s = parse_search(frame)?;
        let mut fault = None;
        if s.is_subtree() {
            let mut armed = self.fault_in.lock().unwrap();
            if let Some((n, f)) = armed.as_mut() {
                *n -= 1;
                if *n == 0 {
                    fault = Some(*f);
                    *armed = None;
                }
            }
        }
        s.cut = fault == Some(Fault::Cut);
        s.stalled = fault == Some(Fault::Stall);
        self.searches.lock().unwrap().push(s);
        fault
    }
}

/// Reads one BER element (an LDAPMessage) whole; `None` at the end of the stream.
async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = [0u8; 2];
    if let Err(e) = r.read_exact(&mut head[..1]).await {
        return if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Ok(None)
        } else {
            Err(e)
        };
    }
    r.read_exact(&mut head[1..]).await?;
    let mut frame = head.to_vec();
    let len = if head[1] < 0x80 {
        usize::from(head[1])
    } else {
        let n = usize::from(head[1] & 0x7f);
        let mut b = vec![0u8; n];
        r.read_exact(&mut b).await?;
        frame.extend_from_slice(&b);
        b.iter().fold(0usize, |a, x| (a << 8) | usize::from(*x))
    };
    let start = frame.len();
    frame.resize(start + len, 0);
    r.read_exact(&mut frame[start..]).await?;
    Ok(Some(frame))
}

/// (tag, content, rest) of the first BER element of `b`.
fn tlv(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = b.split_first()?;
    let (&l, rest) = rest.split_first()?;
    let (len, rest) = if l < 0x80 {
        (usize::from(l), rest)
    } else {
        let n = usize::from(l & 0x7f);
        let (lb, rest) = (rest.get(..n)?, rest.get(n..)?);
        (
            lb.iter().fold(0usize, |a, x| (a << 8) | usize::from(*x)),
            rest,
        )
    };
    Some((tag, rest.get(..len)?, rest.get(len..)?))
}

/// The search request in an LDAPMessage, if it is one.
fn parse_search(frame: &[u8]) -> Option<Search> {
    let (0x30, msg, _) = tlv(frame)? else {
        return None;
    };
    let (0x02, _, rest) = tlv(msg)? else {
        return None;
    };
    let (0x63, req, controls) = tlv(rest)? else {
        return None;
    };
    let (0x04, base, req) = tlv(req)? else {
        return None;
    };
    let (0x0a, scope, _) = tlv(req)? else {
        return None;
    };
    let mut paged = false;
    if let Some((0xa0, mut list, _)) = tlv(controls) {
        while let Some((_, control, rest)) = tlv(list) {
            if let Some((0x04, oid, _)) = tlv(control) {
                paged |= oid == PAGED_OID;
            }
            list = rest;
        }
    }
    Some(Search {
        base: String::from_utf8_lossy(base).into_owned(),
        scope: *scope.first()?,
        paged,
        cut: false,
        stalled: false,
    })
}
