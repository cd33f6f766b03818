//! xenstore served inside the hypervisor: one store per domain, reached through the ring page
//! at `HVM_PARAM_STORE_PFN` and the pre-bound store event channel.
//!
//! Everything is bounded and nothing is allocated per request: a fixed node table per domain
//! ([`tree`]), fixed watch and transaction tables, one request and one reply buffer. The guest
//! sees and changes its own subtree (`/local/domain/D`) and may read the backend nodes kept for
//! it (`/local/domain/0/backend/<class>/D/...`); every node is "owner only" to it. A guest that
//! breaks the ring protocol (indices beyond the ring, a payload over 4096 bytes) loses its
//! store connection; the hypervisor and other domains are unaffected.
//!
//! Backends in the hypervisor use [`Store::write`], [`Store::read`], [`Store::rm`] with
//! absolute paths (no permission checks) and [`Store::hv_watch`] /
//! [`Store::take_hv_event`] to notice the frontend's changes, then call `Xen::store_kick` so
//! the guest sees the watch events that resulted.

pub mod ring;
pub mod tree;
pub mod wire;

use tree::{Path, Tree, is_under, valid_abs};
use virt::GuestMemory;
pub use wire::StoreError;
use wire::{HEADER, Header, PAYLOAD_MAX, cstr};

/// Watches a guest may hold (Xen's `quota-nb-watch-per-domain` is 128; Linux sets ~10).
pub const MAX_WATCHES: usize = 32;
/// Open transactions per guest (Xen's `quota-max-transaction` is 10).
pub const MAX_TRANSACTIONS: usize = 8;
/// Bytes of a watch token (Linux uses the watch's address in hex).
pub const TOKEN_MAX: usize = 64;
/// Watch events queued for delivery; beyond that a watch is remembered as "fired" and reported
/// with its own path, so no watch misses a change, though it may see it coalesced.
pub const MAX_EVENTS: usize = 16;
/// Watches the hypervisor's backends may hold.
pub const MAX_HV_WATCHES: usize = 8;
/// Requests served per kick; a guest that keeps the ring full is served on its next kick.
const BUDGET: u32 = 64;

const BACKEND_ROOT: &[u8] = b"/local/domain/0/backend/";

struct Watch {
    path: Path,
    token: heapless::Vec<u8, TOKEN_MAX>,
    relative: bool,
    /// An event was dropped from a full queue: report the watch's path once.
    overflow: bool,
}

struct Event {
    watch: u8,
    path: Path,
}

#[derive(Clone, Copy)]
struct Tx {
    id: u32,
    generation: u64,
}

/// A domain's xenstore.
#[allow(clippy::new_without_default)]
pub struct Store {
    domid: u16,
    home: Path,
    page: Option<u64>,
    broken: bool,
    tree: Tree,
    watches: [Option<Watch>; MAX_WATCHES],
    events: heapless::Deque<Event, MAX_EVENTS>,
    txs: heapless::Vec<Tx, MAX_TRANSACTIONS>,
    next_tx: u32,
    hv_watches: heapless::Vec<(Path, bool), MAX_HV_WATCHES>,
    input: [u8; HEADER + PAYLOAD_MAX],
    in_len: usize,
    out: heapless::Vec<u8, { HEADER + PAYLOAD_MAX }>,
    out_off: usize,
}

/// Whom a path is resolved for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Who {
    Guest,
    Hypervisor,
}

impl Store {
    pub fn new(domid: u16) -> Self {
        let mut home = Path::new();
        let _ = home.extend_from_slice(b"/local/domain/");
        let _ = wire::push_decimal(&mut home, u32::from(domid));
        Store {
            domid,
            home,
            page: None,
            broken: false,
            tree: Tree::new(),
            watches: [const { None }; MAX_WATCHES],
            events: heapless::Deque::new(),
            txs: heapless::Vec::new(),
            next_tx: 1,
            hv_watches: heapless::Vec::new(),
            input: [0; HEADER + PAYLOAD_MAX],
            in_len: 0,
            out: heapless::Vec::new(),
            out_off: 0,
        }
    }

    /// `/local/domain/D`.
    pub fn home(&self) -> &[u8] {
        &self.home
    }

    /// The guest lost its connection by breaking the ring protocol.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Starts serving the ring page at `page` (a fresh connection), with the nodes a domain
    /// expects: `domid`, `name`, `cpu/N/availability`, `memory/target` and `static-max`,
    /// `control/*`, an empty `device`.
    pub fn attach(&mut self, mem: &dyn GuestMemory, page: u64, vcpus: u32, mem_kib: u64) {
        self.page = Some(page);
        self.broken = ring::reset(mem, page).is_err();
        self.in_len = 0;
        self.out.clear();
        self.out_off = 0;
        self.reset_connection_state();
        let mut num: heapless::Vec<u8, 24> = heapless::Vec::new();
        let node = |s: &mut Store, rel: &[u8], value: &[u8]| {
            let mut p = s.home.clone();
            if p.push(b'/').is_ok() && p.extend_from_slice(rel).is_ok() {
                let _ = s.write(&p, value);
            }
        };
        let _ = wire::push_decimal(&mut num, u32::from(self.domid));
        node(self, b"domid", &num);
        let mut name: heapless::Vec<u8, 24> = heapless::Vec::new();
        let _ = name.extend_from_slice(b"janus-");
        let _ = name.extend_from_slice(&num);
        node(self, b"name", &name);
        for v in 0..vcpus {
            let mut rel: heapless::Vec<u8, 32> = heapless::Vec::new();
            let _ = rel.extend_from_slice(b"cpu/");
            let _ = wire::push_decimal(&mut rel, v);
            let _ = rel.extend_from_slice(b"/availability");
            node(self, &rel, b"online");
        }
        num.clear();
        let _ = wire::push_decimal(&mut num, u32::try_from(mem_kib).unwrap_or(u32::MAX));
        // Equal to what the guest has, so the balloon driver never asks for memory back.
        node(self, b"memory/target", &num);
        node(self, b"memory/static-max", &num);
        node(self, b"control/shutdown", b"");
        node(self, b"control/platform-feature-xs_reset_watches", b"1");
        let mut dev = self.home.clone();
        if dev.extend_from_slice(b"/device").is_ok() {
            let _ = self.mkdir(&dev);
        }
    }

    fn reset_connection_state(&mut self) {
        for w in &mut self.watches {
            *w = None;
        }
        while self.events.pop_front().is_some() {}
        for t in core::mem::take(&mut self.txs) {
            self.tree.discard(t.id);
        }
    }

    // --- hypervisor side -------------------------------------------------------------------

    /// Writes `value` at absolute `path` (creating parents), firing watches.
    pub fn write(&mut self, path: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.change(path, Some(value), Who::Hypervisor, 0)
    }

    /// Creates `path` (and parents) empty if missing.
    pub fn mkdir(&mut self, path: &[u8]) -> Result<(), StoreError> {
        self.change(path, None, Who::Hypervisor, 0)
    }

    pub fn read(&self, path: &[u8]) -> Option<&[u8]> {
        self.tree.read(path, 0)
    }

    /// Removes `path` and its subtree, firing watches.
    pub fn rm(&mut self, path: &[u8]) -> Result<(), StoreError> {
        self.remove(path, 0)
    }

    /// A hypervisor watch on absolute `path` and below; its index is what
    /// [`Store::take_hv_event`] reports.
    pub fn hv_watch(&mut self, path: &[u8]) -> Result<usize, StoreError> {
        let mut p = Path::new();
        p.extend_from_slice(path).map_err(|_| StoreError::TooBig)?;
        self.hv_watches
            .push((p, false))
            .map_err(|_| StoreError::NoSpc)?;
        Ok(self.hv_watches.len() - 1)
    }

    /// A hypervisor watch that fired since the last call.
    pub fn take_hv_event(&mut self) -> Option<usize> {
        let i = self.hv_watches.iter().position(|w| w.1)?;
        self.hv_watches[i].1 = false;
        Some(i)
    }

    // --- tree changes with watches --------------------------------------------------------

    fn change(
        &mut self,
        path: &[u8],
        value: Option<&[u8]>,
        who: Who,
        tx: u32,
    ) -> Result<(), StoreError> {
        if !valid_abs(path) {
            return Err(StoreError::Inval);
        }
        let Store {
            tree,
            watches,
            events,
            hv_watches,
            home,
            domid,
            ..
        } = self;
        let mut fire = |p: &[u8]| fire(watches, events, hv_watches, home, *domid, p, false);
        tree.write(path, value, tx, who == Who::Guest, &mut fire)
    }

    fn remove(&mut self, path: &[u8], tx: u32) -> Result<(), StoreError> {
        let Store {
            tree,
            watches,
            events,
            hv_watches,
            home,
            domid,
            ..
        } = self;
        let mut fire = |p: &[u8]| fire(watches, events, hv_watches, home, *domid, p, true);
        tree.rm(path, tx, &mut fire)
    }

    fn commit(&mut self, tx: u32) {
        let Store {
            tree,
            watches,
            events,
            hv_watches,
            home,
            domid,
            ..
        } = self;
        let mut fire = |p: &[u8]| fire(watches, events, hv_watches, home, *domid, p, true);
        tree.commit(tx, &mut fire);
    }

    // --- the ring ----------------------------------------------------------------------------

    /// Serves the ring: sends pending output, handles every complete request, queues watch
    /// events. Returns whether the guest should be notified (it got data or ring space).
    pub fn service(&mut self, mem: &dyn GuestMemory) -> bool {
        let Some(page) = self.page else {
            return false;
        };
        if self.broken {
            return false;
        }
        let mut notify = false;
        match self.pump(mem, page, &mut notify) {
            Ok(()) => {}
            Err(ring::Broken) => self.broken = true,
        }
        notify
    }

    fn pump(
        &mut self,
        mem: &dyn GuestMemory,
        page: u64,
        notify: &mut bool,
    ) -> Result<(), ring::Broken> {
        let mut budget = BUDGET;
        loop {
            if self.out_off < self.out.len() {
                let n = ring::put_response(mem, page, &self.out[self.out_off..])?;
                *notify |= n > 0;
                self.out_off += n;
                if self.out_off < self.out.len() {
                    return Ok(());
                }
                self.out.clear();
                self.out_off = 0;
            }
            if self.next_event() {
                continue;
            }
            if budget == 0 {
                return Ok(());
            }
            let need = if self.in_len < HEADER {
                HEADER
            } else {
                HEADER + self.header().len as usize
            };
            let n = ring::take_request(mem, page, &mut self.input[self.in_len..need])?;
            *notify |= n > 0;
            self.in_len += n;
            if self.in_len == HEADER && !self.header().len_ok() {
                return Err(ring::Broken);
            }
            if self.in_len >= HEADER && self.in_len == HEADER + self.header().len as usize {
                self.in_len = 0;
                self.handle();
                budget -= 1;
                continue;
            }
            if n == 0 {
                return Ok(());
            }
        }
    }

    fn header(&self) -> Header {
        let mut h = [0u8; HEADER];
        h.copy_from_slice(&self.input[..HEADER]);
        Header::parse(&h)
    }

    /// Moves the next watch event into the output buffer, if any.
    fn next_event(&mut self) -> bool {
        let (watch, path) = match self.events.pop_front() {
            Some(e) => (e.watch as usize, Some(e.path)),
            None => match self
                .watches
                .iter()
                .position(|w| w.as_ref().is_some_and(|w| w.overflow))
            {
                Some(i) => (i, None),
                None => return false,
            },
        };
        let Some(w) = self.watches.get_mut(watch).and_then(Option::as_mut) else {
            return true;
        };
        let path = match path {
            Some(p) => p,
            None => {
                w.overflow = false;
                w.path.clone()
            }
        };
        let shown = if w.relative && is_under(&path, &self.home) && path.len() > self.home.len() {
            &path[self.home.len() + 1..]
        } else {
            &path[..]
        };
        self.out.clear();
        let _ = self.out.extend_from_slice(&[0; HEADER]);
        let _ = self.out.extend_from_slice(shown);
        let _ = self.out.push(0);
        let _ = self.out.extend_from_slice(&w.token);
        let _ = self.out.push(0);
        self.finish_reply(Header {
            ty: wire::WATCH_EVENT,
            req_id: 0,
            tx_id: 0,
            len: 0,
        });
        true
    }

    fn finish_reply(&mut self, mut h: Header) {
        h.len = (self.out.len() - HEADER) as u32;
        if let Some(b) = self.out.get_mut(..HEADER) {
            b.copy_from_slice(&h.encode());
        }
        self.out_off = 0;
    }

    /// Handles the request in `input`, leaving its reply in `out`.
    fn handle(&mut self) {
        let h = self.header();
        let mut payload = [0u8; PAYLOAD_MAX];
        let len = h.len as usize;
        payload[..len].copy_from_slice(&self.input[HEADER..HEADER + len]);
        self.out.clear();
        let _ = self.out.extend_from_slice(&[0; HEADER]);
        let ty = match self.request(&h, &payload[..len]) {
            Ok(()) => h.ty,
            Err(e) => {
                self.out.truncate(HEADER);
                let _ = self.out.extend_from_slice(e.name());
                let _ = self.out.push(0);
                wire::ERROR
            }
        };
        self.finish_reply(Header { ty, ..h });
    }

    fn reply(&mut self, data: &[u8]) -> Result<(), StoreError> {
        self.out
            .extend_from_slice(data)
            .map_err(|_| StoreError::TooBig)
    }

    fn ok(&mut self) -> Result<(), StoreError> {
        self.reply(b"OK\0")
    }

    /// A guest path: relative ones are below the domain's home.
    fn resolve(&self, raw: &[u8]) -> Result<Path, StoreError> {
        let mut p = Path::new();
        if raw.first() != Some(&b'/') {
            p.extend_from_slice(&self.home)
                .map_err(|_| StoreError::TooBig)?;
            if !raw.is_empty() {
                p.push(b'/').map_err(|_| StoreError::TooBig)?;
            }
        }
        p.extend_from_slice(raw).map_err(|_| StoreError::TooBig)?;
        if !valid_abs(&p) {
            return Err(StoreError::Inval);
        }
        Ok(p)
    }

    fn can_read(&self, p: &[u8]) -> bool {
        is_under(p, &self.home) || backend_for(p, self.domid)
    }

    fn can_write(&self, p: &[u8]) -> bool {
        is_under(p, &self.home)
    }

    fn tx(&self, id: u32) -> Result<u32, StoreError> {
        if id == 0 || self.txs.iter().any(|t| t.id == id) {
            Ok(id)
        } else {
            Err(StoreError::NoEnt)
        }
    }

    fn readable(&self, raw: &[u8]) -> Result<Path, StoreError> {
        let p = self.resolve(raw)?;
        if self.can_read(&p) {
            Ok(p)
        } else {
            Err(StoreError::Acces)
        }
    }

    fn writable(&self, raw: &[u8]) -> Result<Path, StoreError> {
        let p = self.resolve(raw)?;
        if self.can_write(&p) {
            Ok(p)
        } else {
            Err(StoreError::Acces)
        }
    }

    fn request(&mut self, h: &Header, payload: &[u8]) -> Result<(), StoreError> {
        match h.ty {
            wire::DIRECTORY => {
                let tx = self.tx(h.tx_id)?;
                let p = self.readable(cstr(payload)?.0)?;
                if !self.tree.exists(&p, tx) {
                    return Err(StoreError::NoEnt);
                }
                let mut full = false;
                let Store { tree, out, .. } = self;
                tree.children(&p, tx, |name| {
                    full = out.extend_from_slice(name).is_err() || out.push(0).is_err();
                    !full
                });
                if full {
                    return Err(StoreError::TooBig);
                }
                Ok(())
            }
            wire::READ => {
                let tx = self.tx(h.tx_id)?;
                let p = self.readable(cstr(payload)?.0)?;
                let Store { tree, out, .. } = self;
                let v = tree.read(&p, tx).ok_or(StoreError::NoEnt)?;
                out.extend_from_slice(v).map_err(|_| StoreError::TooBig)
            }
            wire::GET_PERMS => {
                let tx = self.tx(h.tx_id)?;
                let p = self.readable(cstr(payload)?.0)?;
                if !self.tree.exists(&p, tx) {
                    return Err(StoreError::NoEnt);
                }
                let mut perms: heapless::Vec<u8, 32> = heapless::Vec::new();
                let owner = if self.can_write(&p) { self.domid } else { 0 };
                let _ = perms.push(b'n');
                let _ = wire::push_decimal(&mut perms, u32::from(owner));
                let _ = perms.push(0);
                if owner != self.domid {
                    let _ = perms.push(b'r');
                    let _ = wire::push_decimal(&mut perms, u32::from(self.domid));
                    let _ = perms.push(0);
                }
                self.reply(&perms)
            }
            wire::SET_PERMS => {
                let tx = self.tx(h.tx_id)?;
                let (raw, rest) = cstr(payload)?;
                let p = self.writable(raw)?;
                if !self.tree.exists(&p, tx) {
                    return Err(StoreError::NoEnt);
                }
                // Only "owned by me, nobody else" is representable here.
                let (first, more) = cstr(rest)?;
                let owner_only = matches!(first.first(), Some(b'n'))
                    && wire::decimal(&first[1..]) == Some(u32::from(self.domid))
                    && more.is_empty();
                if !owner_only {
                    return Err(StoreError::Acces);
                }
                self.ok()
            }
            wire::WRITE => {
                let tx = self.tx(h.tx_id)?;
                let (raw, value) = cstr(payload)?;
                let p = self.writable(raw)?;
                self.change(&p, Some(value), Who::Guest, tx)?;
                self.ok()
            }
            wire::MKDIR => {
                let tx = self.tx(h.tx_id)?;
                let p = self.writable(cstr(payload)?.0)?;
                if !self.tree.exists(&p, tx) {
                    self.change(&p, None, Who::Guest, tx)?;
                }
                self.ok()
            }
            wire::RM => {
                let tx = self.tx(h.tx_id)?;
                let p = self.writable(cstr(payload)?.0)?;
                if p == self.home {
                    return Err(StoreError::Acces);
                }
                match self.remove(&p, tx) {
                    // Removing what is already gone succeeds if its parent exists.
                    Err(StoreError::NoEnt)
                        if tree::parent(&p).is_some_and(|q| self.tree.exists(q, tx)) => {}
                    r => r?,
                }
                self.ok()
            }
            wire::WATCH => self.watch(payload),
            wire::UNWATCH => self.unwatch(payload),
            wire::TRANSACTION_START => {
                if h.tx_id != 0 {
                    return Err(StoreError::Busy);
                }
                let id = self.next_tx;
                self.txs
                    .push(Tx {
                        id,
                        generation: self.tree.generation,
                    })
                    .map_err(|_| StoreError::NoSpc)?;
                self.next_tx = self.next_tx.wrapping_add(1).max(1);
                let mut s: heapless::Vec<u8, 12> = heapless::Vec::new();
                let _ = wire::push_decimal(&mut s, id);
                let _ = s.push(0);
                self.reply(&s)
            }
            wire::TRANSACTION_END => {
                let i = self
                    .txs
                    .iter()
                    .position(|t| t.id == h.tx_id && h.tx_id != 0)
                    .ok_or(StoreError::NoEnt)?;
                let commit = match cstr(payload)?.0 {
                    b"T" => true,
                    b"F" => false,
                    _ => return Err(StoreError::Inval),
                };
                let t = self.txs.swap_remove(i);
                if commit && t.generation != self.tree.generation {
                    self.tree.discard(t.id);
                    return Err(StoreError::Again);
                }
                if commit {
                    self.commit(t.id);
                } else {
                    self.tree.discard(t.id);
                }
                self.ok()
            }
            wire::RESET_WATCHES => {
                self.reset_connection_state();
                self.ok()
            }
            wire::GET_DOMAIN_PATH => {
                let d = wire::decimal(cstr(payload)?.0).ok_or(StoreError::Inval)?;
                let mut s = Path::new();
                let _ = s.extend_from_slice(b"/local/domain/");
                let _ = wire::push_decimal(&mut s, d);
                let _ = s.push(0);
                self.reply(&s)
            }
            // The toolstack's operations.
            wire::INTRODUCE
            | wire::RELEASE
            | wire::IS_DOMAIN_INTRODUCED
            | wire::RESUME
            | wire::SET_TARGET
            | 0 => Err(StoreError::Acces),
            _ => Err(StoreError::Inval),
        }
    }

    fn watch(&mut self, payload: &[u8]) -> Result<(), StoreError> {
        let (raw, rest) = cstr(payload)?;
        let (token, _) = cstr(rest)?;
        let relative = raw.first().is_some_and(|&c| c != b'/' && c != b'@');
        let path = if raw.first() == Some(&b'@') {
            let mut p = Path::new();
            p.extend_from_slice(raw).map_err(|_| StoreError::TooBig)?;
            p
        } else {
            self.readable(raw)?
        };
        let mut tok = heapless::Vec::new();
        tok.extend_from_slice(token)
            .map_err(|_| StoreError::TooBig)?;
        if self
            .watches
            .iter()
            .flatten()
            .any(|w| w.path == path && w.token == tok)
        {
            return Err(StoreError::Exist);
        }
        let i = self
            .watches
            .iter()
            .position(Option::is_none)
            .ok_or(StoreError::TooBig)?;
        self.watches[i] = Some(Watch {
            path: path.clone(),
            token: tok,
            relative,
            overflow: false,
        });
        self.ok()?;
        // The first event comes at once, with the path as registered.
        queue(&mut self.watches, &mut self.events, i, &path);
        Ok(())
    }

    fn unwatch(&mut self, payload: &[u8]) -> Result<(), StoreError> {
        let (raw, rest) = cstr(payload)?;
        let (token, _) = cstr(rest)?;
        let path = if raw.first() == Some(&b'@') {
            let mut p = Path::new();
            p.extend_from_slice(raw).map_err(|_| StoreError::TooBig)?;
            p
        } else {
            self.resolve(raw)?
        };
        let i = self
            .watches
            .iter()
            .position(|w| {
                w.as_ref()
                    .is_some_and(|w| w.path == path && w.token == token)
            })
            .ok_or(StoreError::NoEnt)?;
        self.watches[i] = None;
        // Events already queued for it are dropped.
        for _ in 0..self.events.len() {
            if let Some(e) = self.events.pop_front()
                && usize::from(e.watch) != i
            {
                let _ = self.events.push_back(e);
            }
        }
        self.ok()
    }
}

/// `/local/domain/0/backend/<class>/<domid>[/...]`.
fn backend_for(p: &[u8], domid: u16) -> bool {
    let Some(rest) = p.strip_prefix(BACKEND_ROOT) else {
        return false;
    };
    let mut parts = rest.split(|&c| c == b'/');
    let class = parts.next().unwrap_or(&[]);
    let dom = parts.next().unwrap_or(&[]);
    !class.is_empty() && wire::decimal(dom) == Some(u32::from(domid))
}

fn queue(
    watches: &mut [Option<Watch>; MAX_WATCHES],
    events: &mut heapless::Deque<Event, MAX_EVENTS>,
    i: usize,
    path: &[u8],
) {
    let mut p = Path::new();
    let _ = p.extend_from_slice(path);
    if events
        .push_back(Event {
            watch: i as u8,
            path: p,
        })
        .is_err()
        && let Some(Some(w)) = watches.get_mut(i)
    {
        w.overflow = true;
    }
}

/// Queues events for every watch on `path` or above it; with `recurse` (a removal) also for
/// watches below it, reported with their own paths.
#[allow(clippy::too_many_arguments)]
fn fire(
    watches: &mut [Option<Watch>; MAX_WATCHES],
    events: &mut heapless::Deque<Event, MAX_EVENTS>,
    hv_watches: &mut heapless::Vec<(Path, bool), MAX_HV_WATCHES>,
    home: &[u8],
    domid: u16,
    path: &[u8],
    recurse: bool,
) {
    for w in hv_watches.iter_mut() {
        if is_under(path, &w.0) || (recurse && is_under(&w.0, path)) {
            w.1 = true;
        }
    }
    for i in 0..MAX_WATCHES {
        let Some(w) = &watches[i] else { continue };
        let at = if is_under(path, &w.path) {
            path
        } else if recurse && is_under(&w.path, path) {
            &w.path.clone()
        } else {
            continue;
        };
        let at: Path = at.iter().copied().collect();
        if is_under(&at, home) || backend_for(&at, domid) {
            queue(watches, events, i, &at);
        }
    }
}

#[cfg(test)]
mod tests;
