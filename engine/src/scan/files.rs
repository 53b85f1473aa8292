//! Reading plain files: a single file, or every file under a directory (symbolic links
//! are not followed, `.git` directories are not entered).

use std::fs;
use std::path::Path;

use crossbeam_channel::Sender;

use super::report::{Findings, OccurrenceKind, SkipReason};
use super::{Context, Item, Origin, ScanError};

pub(crate) fn scan_files(
    ctx: &Context<'_>,
    root: &Path,
) -> Result<(Findings, &'static str), ScanError> {
    let metadata = fs::metadata(root).map_err(|e| ScanError::Io {
        path: root.display().to_string(),
        message: e.to_string(),
    })?;
    if metadata.is_file() {
        let name = root.display().to_string();
        let findings = ctx.run_pool(|work| {
            send_file(ctx, root, name, metadata.len(), work);
            ctx.enumeration_done();
            Ok(())
        })?;
        return Ok((findings, "file"));
    }
    let findings = ctx.run_pool(|work| {
        let mut pending = vec![(root.to_path_buf(), String::new())];
        while let Some((dir, prefix)) = pending.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(_) if !prefix.is_empty() => {
                    ctx.skip(
                        &file_origin(prefix.trim_end_matches('/').to_owned()),
                        0,
                        SkipReason::Unreadable,
                    );
                    continue;
                }
                Err(e) => {
                    return Err(ScanError::Io {
                        path: dir.display().to_string(),
                        message: e.to_string(),
                    });
                }
            };
            let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                if ctx.cancelled() {
                    return Err(ScanError::Cancelled);
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                let relative = format!("{prefix}{name}");
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    if name != ".git" {
                        pending.push((entry.path(), format!("{relative}/")));
                    }
                } else if kind.is_file() {
                    let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    send_file(ctx, &entry.path(), relative, size, work);
                }
            }
        }
        ctx.enumeration_done();
        Ok(())
    })?;
    Ok((findings, "directory"))
}

fn file_origin(path: String) -> Origin {
    Origin {
        path: Some(path),
        commit: None,
        kind: OccurrenceKind::File,
    }
}

/// Reads a file for the pool; allow-listed paths are not even read.
fn send_file(ctx: &Context<'_>, path: &Path, relative: String, size: u64, work: &Sender<Item>) {
    if ctx.path_allowed(&relative) {
        return;
    }
    ctx.discovered();
    let origin = file_origin(relative);
    if size > ctx.max_blob_size() {
        ctx.skip(&origin, size, SkipReason::TooLarge);
        return;
    }
    match fs::read(path) {
        Ok(data) if data.len() as u64 > ctx.max_blob_size() => {
            ctx.skip(&origin, data.len() as u64, SkipReason::TooLarge)
        }
        Ok(data) => {
            let _ = work.send(Item {
                data,
                origin,
                blob: None,
            });
        }
        Err(_) => ctx.skip(&origin, size, SkipReason::Unreadable),
    }
}
