//! `keygate import FILE`

use tokio::io::AsyncBufReadExt as _;

use super::Failure;
use crate::auth::{Auth, Imported};

pub(super) async fn run(file: &std::path::Path, auth: &Auth) -> Result<(), Failure> {
    let handle = tokio::fs::File::open(file)
        .await
        .map_err(|e| Failure::Usage(format!("cannot open {}: {e}", file.display())))?;
    let mut lines = tokio::io::BufReader::new(handle).lines();
    let (mut created, mut existing, mut failed) = (0u64, 0u64, 0u64);
    let mut number = 0u64;
    loop {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                return Err(Failure::Runtime(format!(
                    "cannot read {} after line {number}: {e}",
                    file.display()
                )));
            }
        };
        number += 1;
        match auth.import_user(&line).await {
            Ok(Imported::Created) => created += 1,
            Ok(Imported::AlreadyThere) => existing += 1,
            Ok(Imported::Blank) => {}
            Err(why) => {
                failed += 1;
                eprintln!("line {number}: {why}");
            }
        }
    }
    println!("imported {created} users; {existing} already existed; {failed} lines failed");
    if failed > 0 {
        return Err(Failure::Runtime(format!(
            "{failed} lines of {} could not be imported (listed above); fix them and run the import again",
            file.display()
        )));
    }
    Ok(())
}
