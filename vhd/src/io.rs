//! Positioned reads and writes over an `embedded-io` stream.

use crate::Error;
use embedded_io::{Read, Seek, SeekFrom, Write};

/// What the library needs from its backing store. Blanket-implemented; `flush` must make
/// everything written so far durable (an fsync for files), because the crash-consistency
/// order depends on it.
pub trait Storage: Read + Write + Seek {}
impl<T: Read + Write + Seek> Storage for T {}

pub(crate) type Result<T, S> = core::result::Result<T, Error<<S as embedded_io::ErrorType>::Error>>;

pub(crate) fn read_at<S: Read + Seek>(io: &mut S, off: u64, buf: &mut [u8]) -> Result<(), S> {
    io.seek(SeekFrom::Start(off))?;
    let mut done = 0;
    while done < buf.len() {
        match io.read(&mut buf[done..])? {
            0 => {
                return Err(Error::UnexpectedEof {
                    offset: off + done as u64,
                });
            }
            n => done += n,
        }
    }
    Ok(())
}

pub(crate) fn write_at<S: Write + Seek>(io: &mut S, off: u64, buf: &[u8]) -> Result<(), S> {
    io.seek(SeekFrom::Start(off))?;
    let mut done = 0;
    while done < buf.len() {
        match io.write(&buf[done..])? {
            0 => {
                return Err(Error::WriteZero {
                    offset: off + done as u64,
                });
            }
            n => done += n,
        }
    }
    Ok(())
}

pub(crate) fn len<S: Seek>(io: &mut S) -> Result<u64, S> {
    Ok(io.seek(SeekFrom::End(0))?)
}
