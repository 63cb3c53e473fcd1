//! Room for a load's connections among the process's open files: the soft limit raised up to
//! the hard one, or a clear refusal. It only reads and sets the limit; it opens nothing.

use anyhow::{bail, Context};

/// Files a load keeps open besides its connections: the runtime's, the standard streams and a
/// connection that stores the keys first.
const FILES_BESIDES_CONNECTIONS: u64 = 64;

/// The process's limit on open files, soft and hard.
fn open_file_limit() -> anyhow::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed, which lives across the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error()).context("reading the open-file limit");
    }
    Ok(limit)
}

/// Raises the soft limit on open files, up to the hard limit, so that `connections` sockets
/// fit; fails, saying both numbers, when even the hard limit is too low.
pub(crate) fn raise_open_file_limit(connections: usize) -> anyhow::Result<()> {
    let needed = (connections as u64).saturating_add(FILES_BESIDES_CONNECTIONS);
    let limit = open_file_limit()?;
    if limit.rlim_cur >= needed {
        return Ok(());
    }
    if limit.rlim_max < needed {
        bail!(
            "{connections} connections need {needed} open files, but the hard limit is {} \
             (raise it with `ulimit -Hn` as root)",
            limit.rlim_max
        );
    }
    let raised = libc::rlimit {
        rlim_cur: needed,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit only reads the struct passed, which lives across the call.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(std::io::Error::last_os_error()).with_context(|| {
            format!("raising the open-file limit to {needed} for {connections} connections")
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_to_hold_the_connections() {
        let connections = usize::try_from(open_file_limit().unwrap().rlim_cur).unwrap() + 100;
        if (connections as u64 + FILES_BESIDES_CONNECTIONS) > open_file_limit().unwrap().rlim_max {
            // The hard limit leaves no room above the soft one: refused, with the numbers.
            assert!(raise_open_file_limit(connections).is_err());
            return;
        }
        raise_open_file_limit(connections).unwrap();
        assert_eq!(
            open_file_limit().unwrap().rlim_cur,
            connections as u64 + FILES_BESIDES_CONNECTIONS
        );
    }

    #[test]
    fn more_connections_than_the_hard_limit_allows_are_refused_with_both_numbers() {
        let hard = open_file_limit().unwrap().rlim_max;
        let too_many = usize::try_from(hard).unwrap_or(usize::MAX);
        let refused = format!("{:#}", raise_open_file_limit(too_many).unwrap_err());
        assert!(refused.contains(&too_many.to_string()), "{refused}");
        if hard != libc::RLIM_INFINITY {
            assert!(refused.contains(&hard.to_string()), "{refused}");
        }
    }
}
