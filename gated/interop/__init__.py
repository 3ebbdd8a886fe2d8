"""Weight interop with other frameworks: :mod:`gated.interop.torch` (PyTorch's LSTM, GRU and RNN) and
:mod:`gated.interop.recurrentgemma` (Griffin and Hawk's recurrent block)."""
