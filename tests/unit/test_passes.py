from selm_ray.learner.passes import IterationPlan


def test_later_passes_replay_every_pair_of_the_iteration_reshuffled_then_stop():
    plan = IterationPlan(passes=3, seed=0, estimate=99)
    plan.record(list(range(5)))                 # pass 1 batches from the buffer
    plan.size_at_drain(steps_taken=1, waiting=3, want=5)
    plan.record([5, 6, 7])
    assert plan.phase_steps == 1 + 1 + 2 * 2    # 8 pairs: 2 steps per pass, 3 passes
    second = [plan.next_batch(5, iteration=0) for _ in range(2)]
    assert plan.current_pass == 2 and sorted(second[0] + second[1]) == list(range(8))
    third = [plan.next_batch(5, iteration=0) for _ in range(2)]
    assert sorted(third[0] + third[1]) == list(range(8)) and third != second  # reshuffled per pass
    assert plan.next_batch(5, iteration=0) is None
    plan.reset()
    assert plan.phase_steps == 99 and plan.next_batch(5, iteration=1) is None  # nothing seen yet


def test_one_pass_remembers_nothing_and_the_drain_fixes_the_phase_once():
    plan = IterationPlan(passes=1, seed=0, estimate=10)
    plan.record(list(range(4)))
    plan.size_at_drain(steps_taken=0, waiting=6, want=4)
    plan.size_at_drain(steps_taken=1, waiting=2, want=4)  # later calls of the same drain: no change
    assert plan.phase_steps == 2 and plan.next_batch(4, iteration=0) is None


def test_the_shuffle_is_seeded():
    def order(seed):
        plan = IterationPlan(passes=2, seed=seed, estimate=1)
        plan.record(list(range(20)))
        return plan.next_batch(20, iteration=0)
    assert order(1) == order(1) and order(1) != order(2)
