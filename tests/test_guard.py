"""The non-finite guard on its own: the flag is computed on the device, fused optimisers skip the
update through ``found_inf``, others get zeroed gradients, and the host acts one step late."""

import pytest
import torch

from selfsup.guard import NonFiniteGuard, NonFiniteLossError, non_finite_flag


def test_flag_sees_a_non_finite_loss_or_gradient():
    finite = [torch.ones(3), torch.zeros(2, 2)]
    assert non_finite_flag(torch.tensor(1.0), finite).item() == 0.0
    assert non_finite_flag(torch.tensor(float("nan")), finite).item() == 1.0
    assert non_finite_flag(torch.tensor(1.0), [torch.ones(3), torch.tensor([float("inf")])]).item() == 1.0
    assert non_finite_flag(torch.tensor(1.0), [torch.ones(2, dtype=torch.bfloat16)]).shape == ()


@pytest.mark.parametrize("fused", [True, False])
def test_a_bad_step_is_skipped_on_the_device(fused):
    weight = torch.nn.Parameter(torch.ones(4))
    optimizer = torch.optim.SGD([weight], lr=0.1, momentum=0.0, fused=fused or None)
    guard = NonFiniteGuard(max_skipped=1)
    weight.grad = torch.tensor([1.0, float("nan"), 1.0, 1.0])
    guard.check(torch.tensor(2.0), optimizer, step=5, epoch=0)
    optimizer.step()
    assert torch.equal(weight.detach(), torch.ones(4))  # nothing moved (plain SGD: zeroed gradient)
    if not fused:
        assert torch.equal(weight.grad, torch.zeros(4))

    class Module(torch.nn.Module):
        def log(self, *args, **kwargs):
            self.logged = args

    module = Module()
    with pytest.warns(UserWarning, match="at step 5 .*step skipped"):
        guard.collect(module)
    assert guard.skipped == 1 and module.logged[0] == "train/skipped_nonfinite_steps"
    weight.grad = torch.full((4,), float("nan"))
    guard.check(None, optimizer, step=6, epoch=0)
    module.trainer = None
    with pytest.raises(NonFiniteLossError, match="at step 6 .*skip_nonfinite_steps"):
        guard.collect(module)
