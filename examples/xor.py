"""Train the generated XOR network with plain gradient descent and print what it learned.

Run after `derive build`:  python examples/xor.py
"""

import time

import numpy as np

import generated.xor as xor

X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
Y = np.array([[0], [1], [1], [0]], dtype=np.float64)

params = xor.init_params(seed=1)
state = xor.init_state(params)
print(f"model: {xor.__doc__.splitlines()[0]}")
print(f"initial loss {xor.loss(params, X, Y):.4f}")
start = time.perf_counter()
for epoch in range(1, 3001):
    value = xor.step(params, state, X, Y, lr=0.5)  # full-batch gradient descent, in place
    if epoch % 1000 == 0:
        print(f"epoch {epoch:5d}  loss {value:.5f}")
took = time.perf_counter() - start
pred = xor.forward(params, X)
print(f"3000 steps in {took:.2f} s ({took / 3000 * 1e6:.1f} µs per step, including the first compile)")
for x, p in zip(X, pred):
    print(f"  xor{tuple(int(v) for v in x)} = {p[0]:.3f}")
assert np.array_equal(pred > 0.5, Y > 0.5), "XOR was not learned"
