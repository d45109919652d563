"""Character-level helpers."""


def count_vowels(text):
    """Count the vowels of a text, ignoring case.

    >>> count_vowels("Programming")
    3
    """
    vowels = set("aeiou")
    return sum(ch in vowels for ch in text.lower())


def is_palindrome(text):
    """Whether a text reads the same backwards, ignoring case and spaces.

    >>> is_palindrome("Never odd or even")
    True
    >>> is_palindrome("codepeft")
    False
    """
    letters = [ch.lower() for ch in text if not ch.isspace()]
    return letters == letters[::-1]


def caesar(text, shift):
    """Shift every lower-case letter by ``shift`` places in the alphabet.

    >>> caesar("abc xyz", 3)
    'def abc'
    """
    shifted = []
    for ch in text:
        if ch.islower():
            ch = chr((ord(ch) - 97 + shift) % 26 + 97)
        shifted.append(ch)
    return "".join(shifted)
