"""The example plugin, tested with mtbench's kit only."""

from mtbench.testing import check_attack, check_task

pytest_plugins = ["mtbench.pytest_plugin"]


def test_colorization_contract(mtbench_plugins):
    check_task(mtbench_plugins.tasks.get("colorization"))
    assert mtbench_plugins.tasks.provider("colorization").startswith("mtbench-extras")


def test_mifgsm_contract(mtbench_plugins):
    check_attack(mtbench_plugins.attacks.get("mi-fgsm"), tasks=("colorization", "depth_zbuffer"))


def test_mifgsm_raises_the_loss_more_with_more_steps(mtbench_plugins, tiny_model_factory, fake_batch_factory):
    from mtbench.testing import attack_request

    model = tiny_model_factory(["colorization"])
    batch = fake_batch_factory(["colorization"], size=16, batch=4)
    spec, task = mtbench_plugins.attacks.get("mi-fgsm"), mtbench_plugins.tasks.get("colorization")

    def loss_after(steps):
        adv = spec.run(attack_request(model, batch, ["colorization"], steps=steps)).adversarial
        return task.loss(model(adv)["colorization"], batch[1]["colorization"], batch[2]["colorization"]).mean()

    assert loss_after(5) > loss_after(0)
