"""Every arm by name: prompt methods (zero-shot, ICL, RAG) and train methods (PEFT, full)."""

from codepeft.methods.base import METHODS, Method, MethodParams, all_methods, get_method, register_method

__all__ = ["METHODS", "Method", "MethodParams", "all_methods", "get_method", "register_method"]
