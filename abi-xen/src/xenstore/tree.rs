//! One domain's store: a fixed table of nodes keyed by absolute path, with transactions kept
//! as shadow nodes in the same table.
//!
//! A transaction's writes and removals live in nodes tagged with its id (a removal is a
//! tombstone), so they cost the same quota as committed nodes and need no copy of the tree.
//! Conflicts are detected with one generation counter: a transaction ends with `EAGAIN` if
//! anything was committed after it started, which is what the original C xenstored did and
//! what Linux retries on.

use super::wire::StoreError;

/// Bytes of an absolute path (Xen allows 3072; every path Linux frontends and our backends use
/// is well under 100).
pub const PATH_MAX: usize = 128;
/// Bytes of a value (Xen's `quota-maxsize` is 2048; state, ids, ring refs and error texts fit).
pub const VALUE_MAX: usize = 128;
/// Nodes in the table, committed and shadow.
pub const MAX_NODES: usize = 128;
/// Slots a guest can never take, so the hypervisor can still publish backend nodes.
pub const RESERVED_NODES: usize = 16;

pub type Path = heapless::Vec<u8, PATH_MAX>;
pub type Value = heapless::Vec<u8, VALUE_MAX>;

#[derive(Clone)]
struct Node {
    path: Path,
    value: Value,
    /// 0: committed; else the transaction this shadow belongs to.
    tx: u32,
    tombstone: bool,
    used: bool,
}

impl Node {
    const EMPTY: Node = Node {
        path: heapless::Vec::new(),
        value: heapless::Vec::new(),
        tx: 0,
        tombstone: false,
        used: false,
    };
}

/// Whether `p` is `base` or lies below it.
pub fn is_under(p: &[u8], base: &[u8]) -> bool {
    if base == b"/" {
        return p.first() == Some(&b'/');
    }
    p.starts_with(base) && (p.len() == base.len() || p.get(base.len()) == Some(&b'/'))
}

/// The parent of an absolute path other than `/`.
pub fn parent(p: &[u8]) -> Option<&[u8]> {
    if p.len() <= 1 {
        return None;
    }
    let i = p.iter().rposition(|&c| c == b'/')?;
    Some(if i == 0 { b"/" } else { &p[..i] })
}

/// The last component.
pub fn basename(p: &[u8]) -> &[u8] {
    p.iter()
        .rposition(|&c| c == b'/')
        .map_or(p, |i| &p[i + 1..])
}

/// Xen's rule for node names: letters, digits and `-/_@`, no empty component.
pub fn valid_abs(p: &[u8]) -> bool {
    if p == b"/" {
        return true;
    }
    p.first() == Some(&b'/')
        && p.last() != Some(&b'/')
        && !p.windows(2).any(|w| w == b"//")
        && p.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'/' | b'_' | b'@' | b'.'))
}

pub struct Tree {
    nodes: [Node; MAX_NODES],
    /// Bumped by every committed change.
    pub generation: u64,
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

impl Tree {
    pub const fn new() -> Self {
        Tree {
            nodes: [const { Node::EMPTY }; MAX_NODES],
            generation: 0,
        }
    }

    pub fn clear(&mut self) {
        for n in &mut self.nodes {
            n.used = false;
        }
        self.generation = self.generation.wrapping_add(1);
    }

    fn find(&self, path: &[u8], tx: u32) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.used && n.tx == tx && n.path == path)
    }

    /// The node `path` as transaction `tx` (0: none) sees it.
    fn visible(&self, path: &[u8], tx: u32) -> Option<usize> {
        if tx != 0
            && let Some(i) = self.find(path, tx)
        {
            return (!self.nodes[i].tombstone).then_some(i);
        }
        self.find(path, 0)
    }

    pub fn exists(&self, path: &[u8], tx: u32) -> bool {
        self.visible(path, tx).is_some()
    }

    pub fn read(&self, path: &[u8], tx: u32) -> Option<&[u8]> {
        self.visible(path, tx).map(|i| &self.nodes[i].value[..])
    }

    pub fn free_slots(&self) -> usize {
        self.nodes.iter().filter(|n| !n.used).count()
    }

    /// Names of the children of `path` as `tx` sees them, each passed to `f`.
    pub fn children(&self, path: &[u8], tx: u32, mut f: impl FnMut(&[u8]) -> bool) -> bool {
        for (i, n) in self.nodes.iter().enumerate() {
            // A committed node hidden behind its transaction's shadow (or tombstone) is not
            // `visible` itself, so each name is listed once.
            let mine = n.tx == 0 || n.tx == tx;
            if n.used
                && mine
                && parent(&n.path) == Some(path)
                && self.visible(&n.path, tx) == Some(i)
                && !f(basename(&n.path))
            {
                return false;
            }
        }
        true
    }

    fn alloc(&mut self, path: &[u8], tx: u32, guest: bool) -> Result<usize, StoreError> {
        if guest && self.free_slots() <= RESERVED_NODES {
            return Err(StoreError::NoSpc);
        }
        let i = self
            .nodes
            .iter()
            .position(|n| !n.used)
            .ok_or(StoreError::NoSpc)?;
        let n = &mut self.nodes[i];
        n.path.clear();
        n.path
            .extend_from_slice(path)
            .map_err(|_| StoreError::TooBig)?;
        n.value.clear();
        n.tx = tx;
        n.tombstone = false;
        n.used = true;
        Ok(i)
    }

    /// Sets `path` (creating missing ancestors, empty) in `tx`. Returns whether anything
    /// changed, for the committed tree; `changed` gets every created or written path.
    pub fn write(
        &mut self,
        path: &[u8],
        value: Option<&[u8]>,
        tx: u32,
        guest: bool,
        changed: &mut dyn FnMut(&[u8]),
    ) -> Result<(), StoreError> {
        if let Some(v) = value
            && v.len() > VALUE_MAX
        {
            return Err(StoreError::TooBig);
        }
        // Count what would be created first, so a failed write leaves nothing half made.
        let mut missing = 0;
        let mut p = Some(path);
        while let Some(q) = p {
            if self.exists(q, tx) {
                break;
            }
            missing += 1;
            p = parent(q);
        }
        let needs_shadow = tx != 0 && self.find(path, tx).is_none() && missing == 0;
        let need = missing + usize::from(needs_shadow);
        let floor = if guest { RESERVED_NODES } else { 0 };
        if self.free_slots() < need + floor {
            return Err(StoreError::NoSpc);
        }
        if missing > 0 {
            // Ancestors from the top down.
            for depth in (0..missing).rev() {
                let mut q = path;
                for _ in 0..depth {
                    q = parent(q).unwrap_or(q);
                }
                let i = match (tx != 0).then(|| self.find(q, tx)).flatten() {
                    Some(i) => i,
                    None => self.alloc(q, tx, false)?,
                };
                self.nodes[i].tombstone = false;
                self.nodes[i].value.clear();
                if tx == 0 {
                    self.generation = self.generation.wrapping_add(1);
                    if depth > 0 || value.is_none() {
                        changed(q);
                    }
                }
            }
        }
        if let Some(v) = value {
            let i = match self.visible(path, tx) {
                Some(i) if self.nodes[i].tx == tx => i,
                _ => self.alloc(path, tx, false)?,
            };
            self.nodes[i].value.clear();
            let _ = self.nodes[i].value.extend_from_slice(v);
            if tx == 0 {
                self.generation = self.generation.wrapping_add(1);
                changed(path);
            }
        }
        Ok(())
    }

    /// Removes `path` and everything below it in `tx`.
    pub fn rm(
        &mut self,
        path: &[u8],
        tx: u32,
        changed: &mut dyn FnMut(&[u8]),
    ) -> Result<(), StoreError> {
        if !self.exists(path, tx) {
            return Err(StoreError::NoEnt);
        }
        if tx == 0 {
            for n in &mut self.nodes {
                if n.used && n.tx == 0 && is_under(&n.path, path) {
                    n.used = false;
                }
            }
            self.generation = self.generation.wrapping_add(1);
            changed(path);
            return Ok(());
        }
        // Tombstone every visible node below, reusing the transaction's own shadows.
        for i in 0..MAX_NODES {
            let n = &self.nodes[i];
            if !n.used || !is_under(&n.path, path) {
                continue;
            }
            if n.tx == tx {
                self.nodes[i].tombstone = true;
            } else if n.tx == 0 && self.find(&n.path.clone(), tx).is_none() {
                let p = n.path.clone();
                let j = self.alloc(&p, tx, false)?;
                self.nodes[j].tombstone = true;
            }
        }
        Ok(())
    }

    /// Drops a transaction's shadows.
    pub fn discard(&mut self, tx: u32) {
        for n in &mut self.nodes {
            if n.used && n.tx == tx {
                n.used = false;
            }
        }
    }

    /// Applies a transaction's shadows to the committed tree.
    pub fn commit(&mut self, tx: u32, changed: &mut dyn FnMut(&[u8])) {
        for i in 0..MAX_NODES {
            if !(self.nodes[i].used && self.nodes[i].tx == tx) {
                continue;
            }
            let path = self.nodes[i].path.clone();
            if let Some(old) = self.find(&path, 0) {
                self.nodes[old].used = false;
            }
            if self.nodes[i].tombstone {
                self.nodes[i].used = false;
            } else {
                self.nodes[i].tx = 0;
            }
            self.generation = self.generation.wrapping_add(1);
            changed(&path);
        }
    }
}
