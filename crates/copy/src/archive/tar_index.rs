//! Indexing a tar by its raw headers, within bounds, whatever the archive claims.

use std::collections::HashMap;
use std::io::{Read, Write};

use super::error::{ArchiveError, ensure};
use super::limits::{MAX_TAR_ENTRIES, MAX_TAR_EXTENSION, MAX_TAR_NAME_BYTES};

/// Reads into `buf` until it is full or the reader ends or fails; how much was read.
pub(super) fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n
}

/// Bounds on indexing a tar (parameters so that tests can reach them cheaply).
#[derive(Debug, Clone, Copy)]
pub(super) struct TarLimits {
    /// Largest GNU long name / long link or PAX extension block.
    extension: u64,
    /// Most headers.
    entries: u64,
    /// Most bytes of names kept.
    name_bytes: u64,
}

pub(super) const TAR_LIMITS: TarLimits = TarLimits {
    extension: MAX_TAR_EXTENSION,
    entries: MAX_TAR_ENTRIES,
    name_bytes: MAX_TAR_NAME_BYTES,
};

/// A tar being indexed, front to back: headers and extension blocks are read, other entries'
/// data passed over.
pub(super) trait TarStream: Read {
    /// Passes over the next `n` bytes; an error if the archive ends first.
    fn skip(&mut self, n: u64) -> std::io::Result<()>;
}

fn ends_early() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "the archive ends early (truncated?)",
    )
}

/// A plain tar file: data is passed over by seeking.
pub(super) struct PlainTar {
    pub(super) file: std::io::BufReader<std::fs::File>,
    pub(super) pos: u64,
    pub(super) len: u64,
}

impl Read for PlainTar {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl TarStream for PlainTar {
    fn skip(&mut self, n: u64) -> std::io::Result<()> {
        if n > self.len - self.pos.min(self.len) {
            return Err(ends_early());
        }
        self.file.seek_relative(n as i64)?;
        self.pos += n;
        Ok(())
    }
}

/// A gzip tar, decompressed into `out` as it is read, at most `limit` bytes of it.
pub(super) struct Unpack<R> {
    inner: R,
    pub(super) out: std::io::BufWriter<std::fs::File>,
    pub(super) written: u64,
    limit: u64,
    /// The limit was reached.
    pub(super) exceeded: bool,
    /// The gzip stream itself was bad.
    pub(super) corrupt: bool,
    buf: Vec<u8>,
}

impl<R: Read> Unpack<R> {
    pub(super) fn new(inner: R, out: std::fs::File, limit: u64) -> Unpack<R> {
        Unpack {
            inner,
            out: std::io::BufWriter::with_capacity(256 << 10, out),
            written: 0,
            limit,
            exceeded: false,
            corrupt: false,
            buf: Vec::new(),
        }
    }
}

impl<R: Read> Read for Unpack<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf).inspect_err(|_| self.corrupt = true)?;
        if self.written + n as u64 > self.limit {
            self.exceeded = true;
            return Err(std::io::Error::other("unpack limit reached"));
        }
        self.out.write_all(&buf[..n])?;
        self.written += n as u64;
        Ok(n)
    }
}

impl<R: Read> TarStream for Unpack<R> {
    fn skip(&mut self, mut n: u64) -> std::io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(256 << 10, 0);
        let result = (|| {
            while n > 0 {
                let want = n.min(buf.len() as u64) as usize;
                let k = self.read(&mut buf[..want])?;
                if k == 0 {
                    return Err(ends_early());
                }
                n -= k as u64;
            }
            Ok(())
        })();
        self.buf = buf;
        result
    }
}

/// Reads one 512-byte block: `false` at a clean end of the archive.
fn read_block(s: &mut impl Read, block: &mut [u8; 512]) -> std::io::Result<bool> {
    let n = read_up_to_checked(s, block)?;
    match n {
        0 => Ok(false),
        512 => Ok(true),
        _ => Err(ends_early()),
    }
}

/// [`read_up_to`], passing errors on.
fn read_up_to_checked(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The value of `key` in PAX extension records (malformed records are passed over, as the `tar`
/// crate does).
fn pax_value<'a>(records: &'a [u8], key: &str) -> Option<&'a [u8]> {
    tar::PaxExtensions::new(records)
        .filter_map(Result::ok)
        .find(|e| e.key_bytes() == key.as_bytes())
        .map(|e| e.value_bytes())
}

/// Entry name → (offset of its data, size), for regular files and links to them.
pub(super) type TarIndex = HashMap<String, (u64, u64)>;

/// [`index_tar_ended`] without the end marker.
#[cfg(test)]
pub(super) fn index_tar(
    s: &mut impl TarStream,
    limits: &TarLimits,
) -> Result<TarIndex, ArchiveError> {
    index_tar_ended(s, limits).map(|(entries, _)| entries)
}

/// Indexes a tar by walking its 512-byte headers: nothing but a header, or an extension block
/// within `limits.extension`, is read into memory, so a hostile archive cannot make ferry hold
/// more than its limits whatever it claims. Also says whether the tar ended with its end marker
/// (a zero block), rather than just stopping between entries, as a truncated one does.
pub(super) fn index_tar_ended(
    s: &mut impl TarStream,
    limits: &TarLimits,
) -> Result<(TarIndex, bool), ArchiveError> {
    let too_large = |at: u64| {
        ArchiveError::invalid(format!(
            "damaged tar archive: the entry at byte {at} is too large"
        ))
    };
    let mut entries = TarIndex::new();
    let mut links = Vec::new();
    let mut name_bytes = 0u64;
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut pax: Option<Vec<u8>> = None;
    let mut headers = 0u64;
    let mut pos = 0u64;
    let mut block = [0u8; 512];
    let mut ended = false;
    loop {
        let at = pos;
        if !read_block(s, &mut block)
            .map_err(|e| ArchiveError::io(format!("the header at byte {at}"), e))?
        {
            break;
        }
        // A zero block ends the archive (a second one follows; nothing after them is read).
        if block.iter().all(|b| *b == 0) {
            ended = true;
            break;
        }
        headers += 1;
        ensure!(
            headers <= limits.entries,
            limit,
            "more than {} entries: not an image archive",
            limits.entries
        );
        let mut header = tar::Header::new_old();
        header.as_mut_bytes().copy_from_slice(&block);
        let sum: u32 = block[..148]
            .iter()
            .chain(&block[156..])
            .map(|b| u32::from(*b))
            .sum::<u32>()
            + 8 * u32::from(b' ');
        ensure!(
            header.cksum().is_ok_and(|c| c == sum),
            invalid,
            "damaged tar archive: the header at byte {at} has a bad checksum"
        );
        let typeflag = block[156];
        let extension = match typeflag {
            b'L' => Some("GNU long name"),
            b'K' => Some("GNU long link name"),
            b'x' | b'g' => Some("PAX extension header"),
            _ => None,
        };
        let mut size = header.entry_size().map_err(|_| {
            ArchiveError::invalid(format!(
                "damaged tar archive: the header at byte {at} has no valid size"
            ))
        })?;
        // A PAX size describes the next member's data, and overrides its header's.
        if extension.is_none()
            && let Some(v) = pax.as_deref().and_then(|p| pax_value(p, "size"))
            && let Some(v) = std::str::from_utf8(v).ok().and_then(|v| v.parse().ok())
        {
            size = v;
        }
        let padded = size
            .checked_next_multiple_of(512)
            .ok_or_else(|| too_large(at))?;
        pos = at.checked_add(512).ok_or_else(|| too_large(at))?;
        let next = pos.checked_add(padded).ok_or_else(|| too_large(at))?;
        if let Some(what) = extension {
            // Checked before a byte of it is read: the `tar` crate would read it whole.
            ensure!(
                size <= limits.extension,
                limit,
                "{what} of {size} bytes at byte {at}, more than the {} a tar entry may have: not an image archive",
                limits.extension
            );
            let mut data = Vec::with_capacity(size as usize);
            s.by_ref()
                .take(size)
                .read_to_end(&mut data)
                .map_err(|e| ArchiveError::io(format!("the {what} at byte {at}"), e))?;
            ensure!(
                data.len() as u64 == size,
                invalid,
                "the {what} at byte {at}: the archive ends early (truncated?)"
            );
            s.skip(padded - size)
                .map_err(|e| ArchiveError::io(format!("the {what} at byte {at}"), e))?;
            match typeflag {
                b'L' | b'K' => {
                    while data.last() == Some(&0) {
                        data.pop();
                    }
                    if typeflag == b'L' {
                        long_name = Some(data);
                    } else {
                        long_link = Some(data);
                    }
                }
                b'x' => pax = Some(data),
                // Global PAX headers say nothing an index needs.
                _ => {}
            }
            pos = next;
            continue;
        }
        let records = pax.take();
        let name_raw = long_name
            .take()
            .or_else(|| Some(pax_value(records.as_deref()?, "path")?.to_vec()))
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let link_raw = long_link
            .take()
            .or_else(|| Some(pax_value(records.as_deref()?, "linkpath")?.to_vec()))
            .or_else(|| header.link_name_bytes().map(|l| l.into_owned()));
        let name = normalize(&String::from_utf8_lossy(&name_raw));
        match typeflag {
            b'0' | b'\0' | b'7' => {
                name_bytes += name.len() as u64;
                entries.insert(name, (pos, size));
            }
            b'1' | b'2' => {
                if let Some(target) = link_raw {
                    let target = String::from_utf8_lossy(&target);
                    let resolved = if typeflag == b'2' {
                        let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                        normalize(&format!("{dir}/{target}"))
                    } else {
                        normalize(&target)
                    };
                    name_bytes += (name.len() + resolved.len()) as u64;
                    links.push((name, resolved));
                }
            }
            _ => {}
        }
        ensure!(
            name_bytes <= limits.name_bytes,
            limit,
            "more than {} bytes of file names: not an image archive",
            limits.name_bytes
        );
        s.skip(padded).map_err(|e| {
            ArchiveError::io(
                format!(
                    "the entry {:?} at byte {at}",
                    String::from_utf8_lossy(&name_raw)
                ),
                e,
            )
        })?;
        pos = next;
    }
    // Docker's legacy format links repeated layers to their first copy.
    for (name, target) in links {
        if let Some(e) = entries.get(&target).copied() {
            entries.insert(name, e);
        }
    }
    Ok((entries, ended))
}

/// `./a//b/../c` → `a/c`.
pub(super) fn normalize(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

#[cfg(test)]
mod tests {
    use super::super::error::chain;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn normalizes_archive_paths() {
        assert_eq!(normalize("./blobs/sha256/ab"), "blobs/sha256/ab");
        assert_eq!(normalize("a/../b//c/."), "b/c");
        assert_eq!(normalize("../../etc/passwd"), "etc/passwd");
    }

    proptest! {
        #[test]
        fn normalized_paths_never_climb(p in "[a-z./]{0,40}") {
            let n = normalize(&p);
            prop_assert!(!n.split('/').any(|c| c == ".." || c == "." ));
            prop_assert!(!n.starts_with('/'));
        }
    }

    // ---- tar headers

    /// Small limits, so that cases reach them cheaply.
    const SMALL: TarLimits = TarLimits {
        extension: 1024,
        entries: 6,
        name_bytes: 64,
    };

    /// A tar of any claimed length (up to endless) made of pieces at offsets, zeros between: what
    /// the indexer reads is counted (that is what it can hold in memory), what it skips is not.
    struct Virtual {
        pieces: Vec<(u64, Vec<u8>)>,
        len: u64,
        pos: u64,
        read: u64,
    }

    impl Virtual {
        fn new(pieces: Vec<(u64, Vec<u8>)>, len: u64) -> Virtual {
            Virtual {
                pieces,
                len,
                pos: 0,
                read: 0,
            }
        }
    }

    impl Read for Virtual {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = (buf.len() as u64).min(self.len - self.pos) as usize;
            let (start, end) = (self.pos, self.pos + n as u64);
            buf[..n].fill(0);
            for (at, bytes) in &self.pieces {
                let (from, to) = ((*at).max(start), (at + bytes.len() as u64).min(end));
                if from < to {
                    buf[(from - start) as usize..(to - start) as usize]
                        .copy_from_slice(&bytes[(from - at) as usize..(to - at) as usize]);
                }
            }
            self.pos = end;
            self.read += n as u64;
            Ok(n)
        }
    }

    impl TarStream for Virtual {
        fn skip(&mut self, n: u64) -> std::io::Result<()> {
            if n > self.len - self.pos {
                return Err(ends_early());
            }
            self.pos += n;
            Ok(())
        }
    }

    /// One endless run of the same header block.
    struct Cycle {
        block: Vec<u8>,
        read: u64,
    }

    impl Read for Cycle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            for b in buf.iter_mut() {
                *b = self.block[(self.read % 512) as usize];
                self.read += 1;
            }
            Ok(buf.len())
        }
    }

    impl TarStream for Cycle {
        fn skip(&mut self, n: u64) -> std::io::Result<()> {
            assert_eq!(n, 0, "a zero-size member has no data");
            Ok(())
        }
    }

    fn header(typeflag: u8, name: &[u8], size: u64) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        let n = name.len().min(100);
        h.as_gnu_mut().unwrap().name[..n].copy_from_slice(&name[..n]);
        h.set_entry_type(tar::EntryType::new(typeflag));
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h.as_bytes().to_vec()
    }

    #[test]
    fn an_endless_long_name_is_refused_after_its_header() {
        for (typeflag, what) in [
            (b'L', "GNU long name"),
            (b'K', "GNU long link name"),
            (b'x', "PAX extension header"),
            (b'g', "PAX extension header"),
        ] {
            let mut s = Virtual::new(
                vec![(0, header(typeflag, b"././@LongLink", 1 << 40))],
                u64::MAX,
            );
            let e = index_tar(&mut s, &TAR_LIMITS).unwrap_err().to_string();
            assert!(
                e.contains(what) && e.contains(&(1u64 << 40).to_string()),
                "{e}"
            );
            assert_eq!(s.read, 512, "only the header was read");
        }
    }

    #[test]
    fn endless_members_stop_at_the_entry_limit() {
        let mut s = Cycle {
            block: header(b'0', b"a", 0),
            read: 0,
        };
        let limits = TarLimits {
            entries: 1000,
            ..TAR_LIMITS
        };
        let e = index_tar(&mut s, &limits).unwrap_err().to_string();
        assert!(e.contains("more than 1000 entries"), "{e}");
        assert_eq!(s.read, 1001 * 512);
        // Names count as they are kept, repeated or not.
        let mut s = Cycle {
            block: header(b'0', &[b'n'; 100], 0),
            read: 0,
        };
        let limits = TarLimits {
            name_bytes: 10_000,
            ..TAR_LIMITS
        };
        let e = index_tar(&mut s, &limits).unwrap_err().to_string();
        assert!(e.contains("more than 10000 bytes of file names"), "{e}");
        assert_eq!(s.read, 101 * 512);
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_unpack_limit() {
        // What an endless gzip of zeros decompresses to: one member claiming 1 TiB, then zeros.
        let inner = std::io::Cursor::new(header(b'0', b"big", 1 << 40)).chain(std::io::repeat(0));
        let tmp = tempfile::tempfile().unwrap();
        let mut s = Unpack::new(inner, tmp, 1 << 20);
        assert!(index_tar(&mut s, &TAR_LIMITS).is_err());
        assert!(s.exceeded);
        assert!(s.written <= 1 << 20, "{}", s.written);
    }

    #[test]
    fn a_truncated_member_is_an_error() {
        let mut s = Virtual::new(vec![(0, header(b'0', b"a", 4096))], 1024);
        let e = chain(&index_tar(&mut s, &TAR_LIMITS).unwrap_err());
        assert!(e.contains("ends") && e.contains("\"a\""), "{e}");
    }

    /// A tar walked header by header from `(typeflag, claimed size, data, name)` specs: the data
    /// is placed after its header (as much as the claim covers), the rest is zeros.
    fn virtual_tar(specs: &[(u8, u64, Vec<u8>, String)], truncate: Option<u64>) -> Virtual {
        let mut pieces = Vec::new();
        let mut pos = 0u64;
        for (typeflag, size, data, name) in specs {
            pieces.push((pos, header(*typeflag, name.as_bytes(), *size)));
            let keep = data.len().min(usize::try_from(*size).unwrap_or(usize::MAX));
            pieces.push((pos + 512, data[..keep].to_vec()));
            match size
                .checked_next_multiple_of(512)
                .and_then(|p| (pos + 512).checked_add(p))
            {
                Some(next) if next < 1 << 62 => pos = next,
                _ => return Virtual::new(pieces, u64::MAX),
            }
        }
        let len = pos + 1024;
        Virtual::new(pieces, truncate.map_or(len, |t| t.min(len)))
    }

    fn typeflags() -> impl Strategy<Value = u8> {
        prop_oneof![
            Just(b'0'),
            Just(b'\0'),
            Just(b'7'),
            Just(b'5'),
            Just(b'1'),
            Just(b'2'),
            Just(b'L'),
            Just(b'K'),
            Just(b'x'),
            Just(b'g'),
            any::<u8>(),
        ]
    }

    fn sizes() -> impl Strategy<Value = u64> {
        prop_oneof![
            0u64..1500,
            (SMALL.extension - 2)..(SMALL.extension + 2),
            (1u64 << 20)..(1u64 << 40),
            Just(u64::MAX >> 1),
        ]
    }

    proptest! {
        /// Whatever the headers claim, the indexer reads (so can hold) at most a header and an
        /// allowed extension block per entry, and at most `entries` of them; what it indexes lies
        /// inside the archive.
        #[test]
        fn tar_index_reads_a_bounded_amount(
            specs in prop::collection::vec(
                (typeflags(), sizes(), prop::collection::vec(any::<u8>(), 0..1500), "[a-z./]{0,12}"),
                0..10,
            ),
            truncate in prop::option::of(0u64..20_000),
        ) {
            let mut s = virtual_tar(&specs, truncate);
            let len = s.len;
            let result = index_tar(&mut s, &SMALL);
            // The structural bound: each header, and the extension data within the limit.
            let allowed: u64 = specs
                .iter()
                .map(|(t, size, _, _)| {
                    512 + if matches!(t, b'L' | b'K' | b'x' | b'g') && *size <= SMALL.extension { *size } else { 0 }
                })
                .sum::<u64>()
                + 512;
            prop_assert!(s.read <= allowed, "read {} > {allowed}", s.read);
            prop_assert!(s.read <= (SMALL.entries + 1) * (512 + SMALL.extension));
            if let Ok(entries) = result {
                prop_assert!(entries.len() as u64 <= SMALL.entries);
                prop_assert!(entries.keys().map(|k| k.len() as u64).sum::<u64>() <= SMALL.name_bytes);
                for (offset, size) in entries.values() {
                    prop_assert!(offset + size <= len);
                }
            }
        }

        /// Random bytes are indexed or refused, never a panic, and never read past their end.
        #[test]
        fn tar_index_of_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..3000)) {
            let len = bytes.len() as u64;
            let mut s = Virtual::new(vec![(0, bytes)], len);
            if let Ok(entries) = index_tar(&mut s, &SMALL) {
                for (offset, size) in entries.values() {
                    prop_assert!(offset + size <= len);
                }
            }
            prop_assert!(s.read <= len);
        }

        /// Archives the `tar` crate writes (GNU long names included) index as the `tar` crate
        /// reads them.
        #[test]
        fn tar_index_agrees_with_the_tar_crate(
            files in prop::collection::vec(("[a-z]{1,8}(/[a-z]{1,60}){0,3}", 0usize..1100), 1..6),
        ) {
            let mut b = tar::Builder::new(Vec::new());
            for (name, size) in &files {
                let mut h = tar::Header::new_gnu();
                h.set_size(*size as u64);
                h.set_mode(0o644);
                b.append_data(&mut h, name, std::io::repeat(7).take(*size as u64)).unwrap();
            }
            let bytes = b.into_inner().unwrap();
            let mut expected = HashMap::new();
            let mut archive = tar::Archive::new(std::io::Cursor::new(&bytes));
            for e in archive.entries().unwrap() {
                let e = e.unwrap();
                expected.insert(
                    normalize(&e.path().unwrap().to_string_lossy()),
                    (e.raw_file_position(), e.size()),
                );
            }
            let len = bytes.len() as u64;
            let got = index_tar(&mut Virtual::new(vec![(0, bytes)], len), &TAR_LIMITS).unwrap();
            prop_assert_eq!(got, expected);
        }
    }
}
