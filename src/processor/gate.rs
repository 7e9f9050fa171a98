//! Stage two's gate on its pings, from stage one's progress records.

/// Stage two's view of stage one's progress, from the progress records on
/// its routes partition: every stage-one task `q` has produced the routes
/// caused by its input up to record time `through[q]` (`i64::MAX`: it is
/// caught up). A ping leaves the merge only when no stage-one task
/// could still route something before it, so stage two sees routes and
/// pings in record-time order, as the one-stage engine does.
///
/// A finite claim stays true for good. "Caught up" holds only for the
/// moment it was written: input may have reached stage one since (entity
/// changes mirrored while the processor was down, before anything had
/// routed them). So a caught-up claim on the routes partition before
/// `fresh_from` (its end when this task started) is not trusted; a live,
/// idle stage-one task repeats its claim every second, so the gate opens
/// again as soon as stage one has read what it missed.
#[derive(Debug, Clone, Default)]
pub(super) struct Gate {
    /// By stage-one task; `None` until its first progress record.
    through: Vec<Option<i64>>,
    /// The routes partition's end offset when this task started.
    fresh_from: i64,
}

impl Gate {
    /// A gate for `tasks` stage-one tasks, closed until each reports.
    pub(super) fn new(tasks: usize, fresh_from: i64) -> Gate {
        Gate { through: vec![None; tasks], fresh_from }
    }

    /// Task `task`'s progress record at `offset` of the routes partition.
    pub(super) fn update(&mut self, task: i32, through: i64, offset: i64) {
        if through == i64::MAX && offset < self.fresh_from {
            return;
        }
        if let Some(slot) = usize::try_from(task).ok().and_then(|t| self.through.get_mut(t)) {
            *slot = Some(through);
        }
    }

    /// Every stage-one task has said it is caught up (since the start).
    pub(super) fn open(&self) -> bool {
        self.limit() == i64::MAX
    }

    /// The stage-one task holding the gate shut (the lowest progress; one
    /// that has not reported yet first), while it is shut.
    pub(super) fn waiting_on(&self) -> Option<i32> {
        if self.open() {
            return None;
        }
        let (q, _) = self.through.iter().enumerate().min_by_key(|(_, t)| t.unwrap_or(i64::MIN))?;
        i32::try_from(q).ok()
    }

    /// Record times at or before this may leave.
    pub(super) fn limit(&self) -> i64 {
        self.through.iter().map(|t| t.unwrap_or(i64::MIN)).min().unwrap_or(i64::MIN)
    }
}

#[cfg(test)]
mod tests {
    use super::Gate;

    #[test]
    fn the_limit_is_the_slowest_task_and_unknown_tasks_hold_everything() {
        let mut g = Gate::new(3, 0);
        assert_eq!(g.limit(), i64::MIN);
        g.update(0, 50, 1);
        g.update(2, i64::MAX, 2);
        assert_eq!(g.limit(), i64::MIN, "task 1 has said nothing yet");
        assert_eq!(g.waiting_on(), Some(1));
        g.update(1, 20, 3);
        assert_eq!(g.limit(), 20);
        assert_eq!(g.waiting_on(), Some(1));
        g.update(1, i64::MAX, 4);
        assert_eq!(g.limit(), 50);
        g.update(7, 0, 5);
        g.update(-1, 0, 6);
        assert_eq!(g.limit(), 50, "tasks outside the partition count are ignored");
    }

    #[test]
    fn caught_up_claims_from_before_the_start_are_not_trusted_finite_ones_are() {
        // The routes partition ended at offset 100 when the task started.
        let mut g = Gate::new(2, 100);
        g.update(0, i64::MAX, 98);
        g.update(1, 40, 99);
        assert_eq!(g.limit(), i64::MIN, "task 0's caught-up claim predates the start");
        g.update(0, 30, 99);
        assert_eq!(g.limit(), 30, "a finite claim from before the start holds");
        g.update(1, i64::MAX, 99);
        assert_eq!(g.limit(), 30, "stale: task 1 stays at 40");
        g.update(0, i64::MAX, 100);
        assert_eq!(g.limit(), 40);
        g.update(1, i64::MAX, 101);
        assert_eq!(g.limit(), i64::MAX, "both caught up since the start");
        assert_eq!(g.waiting_on(), None);
    }
}
