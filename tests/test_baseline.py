import torch

from mtbench.baseline import evaluate_constants, fit_constants


def test_constants_are_label_mean_and_majority_class(plugins):
    tasks = {t: plugins.tasks.get(t) for t in ("depth_zbuffer", "segment_semantic")}
    depth = torch.tensor([1.0, 2.0, 3.0, 100.0]).view(1, 1, 2, 2)
    depth_mask = torch.tensor([True, True, True, False]).view(1, 1, 2, 2)  # 100 is masked out
    seg = torch.tensor([0.0, 5.0, 5.0, 3.0]).view(1, 1, 2, 2)
    seg_mask = torch.ones(1, 1, 2, 2, dtype=torch.bool)
    batches = [(torch.zeros(1, 3, 2, 2), {"depth_zbuffer": depth, "segment_semantic": seg},
                {"depth_zbuffer": depth_mask, "segment_semantic": seg_mask})]
    constants = fit_constants(batches, tasks)
    assert torch.allclose(constants["depth_zbuffer"], torch.tensor([2.0]))
    assert constants["segment_semantic"].argmax().item() == 5
    values = evaluate_constants(constants, batches, tasks)
    assert abs(values["depth_zbuffer"]["mse"] - 2 / 3) < 1e-6  # variance of 1, 2, 3
    # predicted class 5 everywhere: IoU 2/4 for class 5, 0 for classes 0 and 3 -> mIoU 1/6
    assert abs(values["segment_semantic"]["miou"] - 1 / 6) < 1e-6
