"""The example plugin, tested with mtbench's kit only."""

from mtbench.testing import check_attack, check_defense, check_task

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


def test_noise_at_contract(mtbench_plugins):
    spec = mtbench_plugins.defenses.get("noise-at")
    check_defense(spec, tasks=("colorization", "depth_zbuffer"), options={"sigma": "16/255", "noisy_weight": 0.5})
    assert mtbench_plugins.defenses.provider("noise-at").startswith("mtbench-extras")


def test_noise_at_trains_on_other_images_than_the_clean_ones(mtbench_plugins):
    from mtbench.testing import defense_options

    none, noise = mtbench_plugins.defenses.get("none"), mtbench_plugins.defenses.get("noise-at")
    tasks = ("colorization",)
    clean = check_defense(none, tasks=tasks).total
    assert check_defense(noise, tasks=tasks, options={"noisy_weight": 0.0}).total == clean
    assert check_defense(noise, tasks=tasks, options={"sigma": 0.2}).total != clean
    assert defense_options(noise, tasks, {"sigma": "8/255"})["sigma"] == 8 / 255
