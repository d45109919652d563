"""Word-level helpers."""


def word_count(text):
    """Count the words in a text, splitting on whitespace.

    >>> word_count("the quick  brown fox")
    4
    >>> word_count("")
    0
    """
    words = text.split()
    return len(words)


def longest_word(text):
    """Return the longest word of a text (the first one on a tie), or an empty string.

    >>> longest_word("a bb ccc dd")
    'ccc'
    >>> longest_word("")
    ''
    """
    best = ""
    for word in text.split():
        if len(word) > len(best):
            best = word
    return best


def title_case(text):
    """Capitalise every word longer than two letters.

    >>> title_case("the art of war")
    'The Art of War'
    """
    words = [w.capitalize() if len(w) > 2 else w for w in text.split()]
    return " ".join(words)
