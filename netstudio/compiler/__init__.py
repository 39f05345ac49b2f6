"""Shape inference, graph → torch.fx compilation and the training plan."""

from netstudio.compiler.shapes import Analysis, NodeResult, ShapeChecker, analyze

__all__ = ["Analysis", "NodeResult", "ShapeChecker", "analyze", "compile_model", "build_plan"]


def __getattr__(name: str):  # torch is imported only when compiling, not when checking shapes
    if name in ("compile_model", "build_plan", "CompiledModel", "TrainingPlan", "LossTerm"):
        from netstudio.compiler import build

        return getattr(build, name)
    raise AttributeError(name)
