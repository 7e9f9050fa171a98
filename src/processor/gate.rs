//! Stage two's gate on its pings, from stage one's progress records.

/// Stage two's view of stage one's progress, from the progress records on
/// its routes partition: every stage-one task `q` has produced the routes
/// caused by its input up to record time `through[q]` (`i64::MAX`: it is
/// caught up). A ping leaves the merge only when no stage-one task
/// could still route something before it, so stage two sees routes and
/// pings in record-time order, as the one-stage engine does.
#[derive(Debug, Clone, Default)]
pub(super) struct Gate {
    /// By stage-one task; `None` until its first progress record.
    pub(super) through: Vec<Option<i64>>,
}

impl Gate {
    pub(super) fn update(&mut self, task: i32, through: i64) {
        if let Some(slot) = usize::try_from(task).ok().and_then(|t| self.through.get_mut(t)) {
            *slot = Some(through);
        }
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
        let mut g = Gate { through: vec![None; 3] };
        assert_eq!(g.limit(), i64::MIN);
        g.update(0, 50);
        g.update(2, i64::MAX);
        assert_eq!(g.limit(), i64::MIN, "task 1 has said nothing yet");
        g.update(1, 20);
        assert_eq!(g.limit(), 20);
        g.update(1, i64::MAX);
        assert_eq!(g.limit(), 50);
        g.update(7, 0);
        g.update(-1, 0);
        assert_eq!(g.limit(), 50, "tasks outside the partition count are ignored");
    }
}
