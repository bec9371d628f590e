"""DataDAM against DM at an equal budget: the quick preset of both (600 iterations, 64 real images
per class, evaluation 300 epochs with DSA, 3 runs), on MNIST (../shared/data) at IPC 1 and 10
and on the CIFAR-10 subset of ../shared/data (5,170 training images) at IPC 10.

The DM rows on MNIST are those of benchmarks/dm_mnist.py (the identical configuration and seed),
so this script runs DM only on CIFAR-10 unless --with-dm-mnist is given. Both methods start from
the same real images (same seed); their accuracy is recorded once, in the DM rows.

DataDAM is run with the paper's lr_img 1 and, as an investigation, with lr_img 100, which is the
step size of the authors' code (it multiplies the loss by 100; with plain SGD that is the same),
and on CIFAR-10 once more with the rest of the code's settings (p = 1, batch-norm ConvNet).
Rows are ordered so that an interrupted run still answers the main question first.
Usage: python benchmarks/datadam_vs_dm.py [--with-dm-mnist]
"""
import sys

from common import run_all


def spec(method, dataset, ipc, **over):
    return {"method": method, "dataset": dataset, "ipc": ipc, "preset": "quick", "eval_runs": 3,
            "eval_init": method == "dm", "overrides": over}


SPECS = [
    spec("datadam", "mnist", 10),
    spec("datadam", "mnist", 10, lr_img=100.0),
    spec("dm", "cifar10", 10),
    spec("datadam", "cifar10", 10),
    spec("datadam", "mnist", 1),
    spec("datadam", "cifar10", 10, lr_img=100.0),
    # Investigation: the authors' code's settings within the same budget (p = 1, batch-norm ConvNet
    # for matching, lr_img 100); evaluation stays on the instance-norm ConvNet like every row.
    spec("datadam", "cifar10", 10, lr_img=100.0, model="convnet_bn", method_args={"power": 1}),
]

if __name__ == "__main__":
    if "--with-dm-mnist" in sys.argv[1:]:
        SPECS += [spec("dm", "mnist", 1), spec("dm", "mnist", 10)]
    run_all("datadam_vs_dm", SPECS, sys.argv)
