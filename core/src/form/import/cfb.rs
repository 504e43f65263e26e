//! A check of an .xls file's container (the OLE compound file) before calamine reads it.
//! calamine follows the file allocation table's sector chains without bounding them: a chain
//! that loops makes it append the same sectors until memory runs out (the directory chain is
//! read with no length limit). Every chain of a well-formed file ends, so a table with a loop
//! is refused here; with none, no chain is longer than the file. calamine also reads every
//! sheet of an .xls whole, into one cell per row and column of the range its cells span (and
//! reserves what a DIMENSIONS record claims), before the importer sees it: a cell at row 65535,
//! column 65535 asks for 137 GB. The sheets' extents are checked here first, by the limits
//! [`super::MAX_SHEET_ROWS`], [`super::MAX_SHEET_COLUMNS`] and [`super::MAX_XLS_SPAN_CELLS`].

const SIGNATURE: &[u8; 8] = b"\xD0\xCF\x11\xE0\xA1\xB1\x1A\xE1";
/// Sector ids from here up are markers (end of chain, free, FAT or DIFAT sector), not sectors.
const RESERVED: u32 = 0xFFFF_FFFA;

/// Whether `bytes` are a compound file (an .xls, or anything else OLE).
pub(super) fn is_compound_file(bytes: &[u8]) -> bool {
    bytes.starts_with(SIGNATURE)
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    bytes.get(at..at + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Refuses a compound file whose allocation table has a loop; reads it as calamine does
/// (header DIFAT entries, then the DIFAT sector chain, then each FAT sector). Anything else
/// wrong with the file is left to calamine, which reports it.
pub(super) fn check(bytes: &[u8]) -> Result<(), String> {
    let size: usize = match bytes.get(30..32) {
        Some([9, 0]) => 512,
        Some([12, 0]) => 4096,
        _ => return Ok(()),
    };
    // Sector `id` starts after the header, which takes one sector.
    let sector = |id: u32| -> &[u8] {
        let start = (id as usize).saturating_add(1).saturating_mul(size);
        bytes.get(start..bytes.len().min(start.saturating_add(size))).unwrap_or(&[])
    };
    let sectors = bytes.len() / size;
    let mut difat: Vec<u32> = (0..109).filter_map(|i| u32_at(bytes, 76 + 4 * i)).collect();
    let mut next = u32_at(bytes, 68).unwrap_or(u32::MAX);
    let mut steps = 0;
    while next < RESERVED {
        steps += 1;
        if steps > sectors + 1 {
            return Err("the file is corrupt (its sector table loops)".into());
        }
        let s = sector(next);
        difat.extend(s.chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])));
        next = difat.pop().unwrap_or(u32::MAX);
    }
    let mut fat: Vec<u32> = Vec::new();
    for id in difat.into_iter().filter(|id| *id < RESERVED) {
        if fat.len() > sectors.saturating_add(size) {
            break;
        }
        fat.extend(sector(id).chunks_exact(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])));
    }
    // The table maps each sector to the next of its chain: a chain loops when following it
    // comes back to a sector on the path being followed. Each sector is walked once.
    const NEW: u8 = 0;
    const ON_PATH: u8 = 1;
    const ENDS: u8 = 2;
    let mut state = vec![NEW; fat.len()];
    let mut path = Vec::new();
    for start in 0..fat.len() {
        let mut at = start;
        while at < fat.len() && state[at] == NEW {
            state[at] = ON_PATH;
            path.push(at);
            at = fat[at] as usize;
        }
        if at < fat.len() && state[at] == ON_PATH {
            return Err("the file is corrupt (a chain of its sectors loops)".into());
        }
        for p in path.drain(..) {
            state[p] = ENDS;
        }
    }
    match workbook_stream(bytes, size, &fat, sector) {
        Some(stream) => check_sheet_extents(&stream),
        None => Ok(()),
    }
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    bytes.get(at..at + 2).map(|b| u16::from_le_bytes([b[0], b[1]]))
}

/// The bytes of the chain that starts at `start` (sectors of `unit` bytes read by `sector`),
/// at most `len`. The table has no loop here, and each sector is taken at most once anyway.
fn chain<'a>(start: u32, table: &[u32], len: usize, sector: impl Fn(u32) -> &'a [u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut id = start;
    let mut steps = 0;
    while (id as usize) < table.len() && out.len() < len && steps <= table.len() {
        out.extend_from_slice(sector(id));
        id = table[id as usize];
        steps += 1;
    }
    out.truncate(len);
    out
}

/// The `Workbook` (or BIFF5 `Book`) stream, found and read as calamine does.
fn workbook_stream<'a>(
    bytes: &'a [u8],
    size: usize,
    fat: &[u32],
    sector: impl Fn(u32) -> &'a [u8] + Copy,
) -> Option<Vec<u8>> {
    let dirs = chain(u32_at(bytes, 48)?, fat, usize::MAX, sector);
    let entries: Vec<(String, u32, usize)> = dirs
        .chunks_exact(128)
        .map(|d| {
            let name_len = usize::from(u16_at(d, 64).unwrap_or(0)).min(64);
            let units: Vec<u16> =
                d[..name_len].chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
            let name = String::from_utf16_lossy(&units).trim_end_matches('\0').to_owned();
            (name, u32_at(d, 116).unwrap_or(u32::MAX), u32_at(d, 120).unwrap_or(0) as usize)
        })
        .collect();
    let root = entries.first()?;
    let (_, start, len) = ["Workbook", "Book"]
        .iter()
        .find_map(|want| entries.iter().find(|(n, _, _)| n.eq_ignore_ascii_case(want)))?;
    if *len >= 4096 {
        return Some(chain(*start, fat, *len, sector));
    }
    // A small stream lives in the mini stream, in 64-byte sectors with their own table.
    let mini = chain(root.1, fat, root.2, sector);
    let mini_fat_len = (u32_at(bytes, 64)? as usize).saturating_mul(size);
    let mini_fat: Vec<u32> = chain(u32_at(bytes, 60)?, fat, mini_fat_len, sector)
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let mini_sector = |id: u32| -> &[u8] {
        let start = (id as usize).saturating_mul(64);
        mini.get(start..mini.len().min(start.saturating_add(64))).unwrap_or(&[])
    };
    Some(chain(*start, &mini_fat, *len, mini_sector))
}

/// The BIFF records from `pos`: (type, data); CONTINUE records are skipped, as they only
/// extend the record before them.
fn records(stream: &[u8], mut pos: usize) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || loop {
        let typ = u16_at(stream, pos)?;
        let len = usize::from(u16_at(stream, pos + 2)?);
        let data = stream.get(pos + 4..(pos + 4 + len).min(stream.len()))?;
        pos += 4 + len;
        if typ != 0x003C {
            return Some((typ, data));
        }
    })
}

/// Refuses a sheet whose cells span more rows, columns or cells than the importer takes, or
/// whose DIMENSIONS record claims so. Sheets are found through the BOUNDSHEET records of the
/// workbook globals, as calamine finds them.
fn check_sheet_extents(stream: &[u8]) -> Result<(), String> {
    use super::{MAX_SHEET_COLUMNS, MAX_SHEET_ROWS, MAX_XLS_SPAN_CELLS};
    let too_big = |rows: u64, cols: u64| {
        rows > u64::from(MAX_SHEET_ROWS)
            || cols > u64::from(MAX_SHEET_COLUMNS)
            || rows.saturating_mul(cols) > MAX_XLS_SPAN_CELLS as u64
    };
    let refuse = |rows: u64, cols: u64| {
        Err(format!(
            "a sheet spans {rows} rows and {cols} columns; an .xls form's sheets may span at most \
             {MAX_SHEET_ROWS} rows, {MAX_SHEET_COLUMNS} columns and {MAX_XLS_SPAN_CELLS} cells \
             (delete the cells far down or to the right)"
        ))
    };
    let mut sheets = Vec::new();
    for (typ, data) in records(stream, 0) {
        match typ {
            0x0085 => sheets.extend(u32_at(data, 0)),
            0x000A => break,
            _ => {}
        }
    }
    for at in sheets {
        let (mut rows, mut cols) = ((u16::MAX, 0u16), (u16::MAX, 0u16));
        let mut seen_bof = false;
        let mut depth = 0usize;
        for (typ, data) in records(stream, at as usize) {
            if depth > 0 {
                match typ {
                    0x0809 => depth += 1,
                    0x000A => depth -= 1,
                    _ => {}
                }
                continue;
            }
            let cell = match typ {
                0x0809 if seen_bof => {
                    depth += 1;
                    None
                }
                0x0809 => {
                    seen_bof = true;
                    None
                }
                0x000A => break,
                0x0200 => {
                    // DIMENSIONS: first row, last row + 1, first column, last column + 1.
                    let (r0, r1, c0, c1) = if data.len() >= 14 {
                        (u32_at(data, 0), u32_at(data, 4), u16_at(data, 8), u16_at(data, 10))
                    } else {
                        (
                            u16_at(data, 0).map(u32::from),
                            u16_at(data, 2).map(u32::from),
                            u16_at(data, 4),
                            u16_at(data, 6),
                        )
                    };
                    if let (Some(r0), Some(r1), Some(c0), Some(c1)) = (r0, r1, c0, c1) {
                        // What calamine reserves from it: a first column past 255 or past the
                        // last counts as 0, an empty range as one cell, and its u32 arithmetic
                        // wraps where the record is backwards.
                        let c0 = if c0 > 0xFF || c1 < c0 { 0 } else { u32::from(c0) };
                        let c1 = u32::from(c1);
                        let (h, w) = if r1 >= 1 && c1 >= 1 {
                            (
                                (r1 - 1).wrapping_sub(r0).wrapping_add(1),
                                (c1 - 1).wrapping_sub(c0).wrapping_add(1),
                            )
                        } else {
                            (1, 1)
                        };
                        let (h, w) = (u64::from(h), u64::from(w));
                        if too_big(h, w) {
                            return refuse(h, w);
                        }
                    }
                    None
                }
                0x0203 | 0x0204 | 0x00D6 | 0x0205 | 0x027E | 0x00FD | 0x0006 => {
                    u16_at(data, 0).zip(u16_at(data, 2)).map(|(r, c)| (r, c, c))
                }
                0x00BD => match (u16_at(data, 0), u16_at(data, 2), data.len().checked_sub(2)) {
                    (Some(r), Some(c), Some(last)) => Some((r, c, u16_at(data, last).unwrap_or(c).max(c))),
                    _ => None,
                },
                _ => None,
            };
            if let Some((r, c0, c1)) = cell {
                rows = (rows.0.min(r), rows.1.max(r));
                cols = (cols.0.min(c0), cols.1.max(c1));
                let (h, w) = (u64::from(rows.1 - rows.0) + 1, u64::from(cols.1 - cols.0) + 1);
                if too_big(h, w) {
                    return refuse(h, w);
                }
            }
        }
    }
    Ok(())
}
