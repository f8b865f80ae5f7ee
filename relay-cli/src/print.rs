//! Printing merged events: text, JSON or raw payloads.

use super::*;

/// How `relay cat` prints (its output options, resolved).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Output {
    /// One JSON object per line.
    pub(crate) json: bool,
    /// Payload bytes only.
    pub(crate) raw: bool,
    /// How payloads print (`--payload`; text for text, hex for JSON).
    pub(crate) payload: crate::fmt::Payload,
    /// How timestamps print (`--time`).
    pub(crate) time: crate::time::TimeArg,
}

/// Where a [`Printer`] writes: a `Vec` takes each record's line in place
/// (formatted straight into it, not copied), anything else through
/// `write_all` from the printer's line buffer.
pub(crate) trait Sink: Write {
    /// The buffer to format into, if this sink is one.
    fn in_place(&mut self) -> Option<&mut Vec<u8>> {
        None
    }
}

impl Sink for Vec<u8> {
    fn in_place(&mut self) -> Option<&mut Vec<u8>> {
        Some(self)
    }
}

impl<W: Write> Sink for io::BufWriter<W> {}

/// `relay cat`'s output.
pub(crate) struct Printer<'p, W: Sink> {
    pub(crate) out: W,
    pub(crate) path: &'p Path,
    pub(crate) json: bool,
    pub(crate) raw: bool,
    pub(crate) payload: crate::fmt::Payload,
    pub(crate) corrupt: u64,
    /// stdout was closed (e.g. `| head`): stop quietly.
    pub(crate) closed: bool,
    /// Lines for standard error, printed with [`Self::emit_notes`].
    pub(crate) notes: Vec<String>,
    /// The line being formatted (reused: no allocation per record).
    pub(crate) line: Vec<u8>,
    /// How timestamps print (`--time`).
    pub(crate) times: crate::time::Times,
    /// The channel's name, when several are merged (`relay cat a b`):
    /// each event says which it comes from.
    pub(crate) channel: Option<&'p str>,
}

impl<W: Sink> Printer<'_, W> {
    /// A decoded frame, printed as the merged event it carries.
    pub(crate) fn frame(&mut self, frame: Frame<'_>) {
        match frame {
            Frame::Corrupt { cpu, message, .. } => {
                eprintln!("relay: {}: cpu {cpu}: {message}", self.path.display());
                self.corrupt += 1;
                if self.json && !self.closed {
                    let l = &mut self.line;
                    l.clear();
                    l.extend_from_slice(b"{\"kind\":\"corrupt\",\"cpu\":");
                    crate::fmt::push_u64(l, cpu.into());
                    l.extend_from_slice(b",\"error\":");
                    relay_user::json::push_string(l, message.as_bytes());
                    l.extend_from_slice(b"}\n");
                    self.closed = self.out.write_all(l).is_err();
                }
            }
            f => {
                if let Some(e) = f.event() {
                    self.print(e);
                }
            }
        }
    }

    pub(crate) fn print(&mut self, event: Event<'_>) {
        if self.closed {
            return;
        }
        let (out, path, json) = (&mut self.out, self.path, self.json);
        let r = match event {
            Event::Record { record, .. } if self.raw => out.write_all(record.payload),
            Event::Record { cpu, record } => {
                let line = Line {
                    times: &mut self.times,
                    channel: self.channel,
                    payload: self.payload,
                    json,
                };
                match out.in_place() {
                    Some(buf) => {
                        line.push(buf, cpu, &record);
                        Ok(())
                    }
                    None => {
                        self.line.clear();
                        line.push(&mut self.line, cpu, &record);
                        out.write_all(&self.line)
                    }
                }
            }
            Event::Lost {
                cpu,
                lost,
                ts,
                total,
            } => {
                let abandoned = if lost.abandoned > 0 {
                    format!(", abandoned {}", lost.abandoned)
                } else {
                    String::new()
                };
                self.notes.push(format!(
                    "relay: {}: cpu {cpu} lost {} records before ts {ts} (full {}, too big {}, overwritten {}{abandoned}; {} in all)",
                    path.display(),
                    lost.total(),
                    lost.full,
                    lost.too_big,
                    lost.overwrite,
                    total.total(),
                ));
                if json {
                    let causes = |l: &Lost| {
                        format!(
                            "{{\"full\":{},\"too_big\":{},\"overwrite\":{},\"abandoned\":{}}}",
                            l.full, l.too_big, l.overwrite, l.abandoned
                        )
                    };
                    let channel = self.channel.map_or(String::new(), |c| {
                        let mut v = b",\"channel\":".to_vec();
                        relay_user::json::push_string(&mut v, c.as_bytes());
                        String::from_utf8_lossy(&v).into_owned()
                    });
                    writeln!(
                        out,
                        "{{\"kind\":\"lost\",\"ts\":{ts}{channel},\"cpu\":{cpu},\"lost\":{},\"lost_total\":{}}}",
                        causes(&lost),
                        causes(&total)
                    )
                } else {
                    Ok(())
                }
            }
            Event::Corrupt { cpu, error } => {
                self.notes
                    .push(format!("relay: {}: cpu {cpu}: {error}", path.display()));
                self.corrupt += 1;
                if json {
                    let l = &mut self.line;
                    l.clear();
                    l.extend_from_slice(b"{\"kind\":\"corrupt\",\"cpu\":");
                    crate::fmt::push_u64(l, cpu.into());
                    if let Some(c) = self.channel {
                        l.extend_from_slice(b",\"channel\":");
                        relay_user::json::push_string(l, c.as_bytes());
                    }
                    l.extend_from_slice(b",\"error\":");
                    relay_user::json::push_string(l, error.to_string().as_bytes());
                    l.extend_from_slice(b"}\n");
                    out.write_all(l)
                } else {
                    Ok(())
                }
            }
        };
        self.closed = r.is_err();
    }

    /// Prints the messages for standard error that the events printed so
    /// far produced (after the output that carries those events was
    /// written, so that both go out or neither).
    pub(crate) fn emit_notes(&mut self) {
        for note in self.notes.drain(..) {
            eprintln!("{note}");
        }
    }
}

/// How a record's line is formatted: the printer's settings, borrowed.
struct Line<'a> {
    times: &'a mut crate::time::Times,
    channel: Option<&'a str>,
    payload: crate::fmt::Payload,
    json: bool,
}

impl Line<'_> {
    /// Appends `record`'s line (text or JSON) to `l`.
    fn push(self, l: &mut Vec<u8>, cpu: u32, record: &relay_core::Record<'_>) {
        use crate::fmt::push_u64;
        if self.json {
            l.extend_from_slice(b"{\"kind\":\"record\",\"ts\":");
            push_u64(l, record.ts);
            self.times.push_json(l, record.ts);
            if let Some(c) = self.channel {
                l.extend_from_slice(b",\"channel\":");
                relay_user::json::push_string(l, c.as_bytes());
            }
            l.extend_from_slice(b",\"cpu\":");
            push_u64(l, cpu.into());
            l.extend_from_slice(b",\"type\":");
            push_u64(l, record.rtype.into());
            l.extend_from_slice(b",\"len\":");
            push_u64(l, record.payload.len() as u64);
            self.payload.push_json_field(l, record.payload);
            l.extend_from_slice(b"}\n");
        } else {
            self.times.push(l, record.ts);
            if let Some(c) = self.channel {
                l.push(b' ');
                l.extend_from_slice(c.as_bytes());
            }
            l.extend_from_slice(b" cpu");
            push_u64(l, cpu.into());
            l.extend_from_slice(b" type=");
            push_u64(l, record.rtype.into());
            l.extend_from_slice(b" len=");
            push_u64(l, record.payload.len() as u64);
            l.push(b' ');
            self.payload.push(l, record.payload);
            l.push(b'\n');
        }
    }
}
