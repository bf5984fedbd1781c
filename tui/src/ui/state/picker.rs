//! The picker: the probes running on this machine, to choose one before attaching (`stallscope`
//! with several probes and no target). Pure data like the rest of `state/`: the run loop lists the
//! probes ([`crate::list::probes`]) and hands the listing over with [`Picker::set_probes`].

use stallscope_wire::discovery::Found;

use crate::list::ProbeRow;

/// What the picker ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Picked {
    /// Attach to this probe.
    Probe(Found),
    /// The user gave up (`q`, `Esc`, Ctrl-C).
    Nothing,
}

/// The picker screen.
#[derive(Debug, Clone, Default)]
pub struct Picker {
    /// The live probes, by pid: a probe whose process has exited is not offered.
    pub probes: Vec<ProbeRow>,
    /// Selected row.
    pub selected: usize,
    /// Set by Enter or `q`: the picker's loop ends.
    pub picked: Option<Picked>,
    /// Draw without colours (`NO_COLOR`).
    pub no_color: bool,
}

impl Picker {
    /// A picker over `rows` (the dead ones are left out).
    pub fn new(rows: Vec<ProbeRow>) -> Picker {
        let mut p = Picker::default();
        p.set_probes(rows);
        p
    }

    /// Takes a new listing: probes that exited go, new ones come in, and the selection stays on
    /// the same process while it lives (or on the row where it was, when it is gone).
    pub fn set_probes(&mut self, rows: Vec<ProbeRow>) {
        let was = self.probes.get(self.selected).map(|r| r.found.pid);
        self.probes = rows.into_iter().filter(|r| r.found.alive).collect();
        self.probes.sort_by_key(|r| r.found.pid);
        self.selected = match was.and_then(|pid| self.probes.iter().position(|r| r.found.pid == pid)) {
            Some(i) => i,
            None => self.selected.min(self.probes.len().saturating_sub(1)),
        };
    }

    /// The selected probe, if any is left.
    pub fn selection(&self) -> Option<&Found> {
        self.probes.get(self.selected).map(|r| &r.found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pid: u32, alive: bool) -> ProbeRow {
        ProbeRow {
            found: Found { pid, name: format!("p{pid}"), path: format!("/s/{pid}-p.sock").into(), alive },
            uptime: None,
        }
    }

    #[test]
    fn exited_probes_go_and_the_selection_follows_its_process() {
        let mut p = Picker::new(vec![row(30, true), row(10, true), row(20, true), row(40, false)]);
        assert_eq!(p.probes.iter().map(|r| r.found.pid).collect::<Vec<_>>(), [10, 20, 30], "dead 40 not offered");
        p.selected = 2;
        p.set_probes(vec![row(10, true), row(30, true), row(20, false)]);
        assert_eq!(p.selection().map(|f| f.pid), Some(30), "still on 30, now second");
        p.set_probes(vec![row(10, true)]);
        assert_eq!(p.selection().map(|f| f.pid), Some(10), "30 exited: the nearest row");
        p.set_probes(Vec::new());
        assert_eq!(p.selection(), None);
    }
}
