"""The UI's words: English in the code, Simplified Chinese here, one `tr()` for both.

Why not Qt's .ts/.qm files: they need lupdate/lrelease runs and a compiled binary in the repository for every
change of wording; one dictionary does the same for an app this size and a test keeps it complete (every
`tr("...")` literal in gui/ must have an entry). Qt's own dialogs (file pickers, standard buttons) use Qt's
shipped translations, loaded by `install_qt_translations`.

Call `tr()` when a widget is built, never at import time, so the language chosen at start-up applies. The
language is set once at start-up; the settings dialog says a change applies after a restart.
"""

from __future__ import annotations

from PySide6.QtCore import QLibraryInfo, QLocale, QTranslator
from PySide6.QtWidgets import QApplication

LANGUAGES = {"en": "English", "zh_CN": "简体中文"}

ZH_CN = {
    # capture and screenshots
    "Nothing to capture again yet: capture a region first.": "还没有可重复截取的区域：请先截取一个区域。",
    "The monitor of the last capture is gone; capture a region first.": "上次截取所在的显示器已不存在；请先截取一个区域。",
    "Cannot take screenshots on this desktop ({reasons}).": "无法在此桌面上截图（{reasons}）。",
    "{handler}: not for this desktop": "{handler}：不适用于此桌面",
    "{handler}: not installed": "{handler}：未安装",
    "grim could not take a screenshot: {error}": "grim 无法截图：{error}",
    "screen region": "屏幕区域",
    # engine host and jobs
    "the embedded OCR engine": "内置 OCR 引擎",
    "Loading {model}...": "正在加载 {model}…",
    "GPU not used: {reason}": "未使用 GPU：{reason}",
    "Unexpected error: {error}": "意外错误：{error}",
    # main window
    "Ready": "就绪",
    "Main": "主工具栏",
    "Capture region": "截取区域",
    "Capture again": "再次截取",
    "Open...": "打开…",
    "Paste": "粘贴",
    "Models...": "模型…",
    "Settings...": "设置…",
    "Task:": "任务：",
    "Model:": "模型：",
    "Text (OCR)": "文字识别 (OCR)",
    "Table": "表格",
    "Caption": "图片描述",
    "Ask a question": "提问",
    "Extract fields": "提取字段",
    "Schema file...": "模式文件…",
    "Open a JSON schema": "打开 JSON 模式",
    "JSON schema": "JSON 模式",
    "Field": "字段",
    "Value": "值",
    "Fields": "字段",
    "short": "简短",
    "medium": "中等",
    "long": "详细",
    "Your question about the image": "关于图片的问题",
    "Run": "运行",
    "Cancel": "取消",
    "Copy": "复制",
    "Copy for spreadsheet": "复制到表格软件",
    "Tab-separated: pastes into spreadsheet cells": "制表符分隔：可直接粘贴到电子表格的单元格中",
    "Save as": "另存为",
    "Open images": "打开图片",
    "Images": "图片",
    "clipboard": "剪贴板",
    "dropped image": "拖入的图片",
    "The clipboard holds no image.": "剪贴板中没有图片。",
    "Add an image first: capture a region, drop or paste an image, or open a file.": "请先添加图片：截取区域、拖入或粘贴图片，或打开文件。",
    "Type a question, then press Run.": "请输入问题，然后点击“运行”。",
    "Cancelling...": "正在取消…",
    "Done: {engine}": "完成：{engine}",
    "Failed": "失败",
    "Cancelled": "已取消",
    "Copied to the clipboard": "已复制到剪贴板",
    "Could not copy to the clipboard.": "无法复制到剪贴板。",
    "Could not save {file}: {error}": "无法保存 {file}：{error}",
    "Built-in OCR (no model)": "内置 OCR（无需模型）",
    # queue, preview, result, history
    "waiting": "等待中",
    "working...": "处理中…",
    "done": "完成",
    "failed": "失败",
    "cancelled": "已取消",
    "Drop images here": "将图片拖到这里",
    "Capture a region, drop or paste an image, or open a file.": "截取区域、拖入或粘贴图片，或打开文件。",
    "Text": "文本",
    "Markdown": "Markdown",
    "Table:": "表格：",
    "{number} of {count}": "第 {number} 个，共 {count} 个",
    "History": "历史记录",
    "Clear history": "清空历史记录",
    "Delete all saved results?": "删除所有已保存的结果？",
    # tray
    "Show window": "显示窗口",
    "Quit": "退出",
    # model manager
    "Models": "模型",
    "Name": "名称",
    "Format": "格式",
    "Model": "模型",
    "Quant": "量化",
    "Size": "大小",
    "Folder": "文件夹",
    "Models folder: {folder}": "模型文件夹：{folder}",
    "Delete model": "删除模型",
    "Delete {name} and its files ({folder})?": "删除 {name} 及其文件（{folder}）？",
    "Could not delete {folder}: {error}": "无法删除 {folder}：{error}",
    "Convert a checkpoint": "转换检查点",
    "Hugging Face checkpoint folder (config.json, *.safetensors)": "Hugging Face 检查点文件夹（config.json、*.safetensors）",
    "Checkpoint:": "检查点：",
    "Checkpoint folder": "检查点文件夹",
    "Browse...": "浏览…",
    "Model name:": "模型名称：",
    "Quant:": "量化：",
    "Convert": "转换",
    "Starting...": "正在开始…",
    "Converted: {folder}": "已转换：{folder}",
    "Conversion cancelled; nothing was kept.": "转换已取消，未保留任何文件。",
    "Converting needs the converter: {command}": "转换需要安装转换器：{command}",
    "Choose a checkpoint folder first.": "请先选择检查点文件夹。",
    "Give the model a name (no slashes).": "请为模型命名（不含斜杠）。",
    # settings
    "Settings": "设置",
    "automatic": "自动",
    "model default": "模型默认值",
    "task default": "任务默认值",
    "CPU threads:": "CPU 线程数：",
    "Offload to the GPU when available": "可用时使用 GPU 加速",
    "Image-token budget:": "图像 token 预算：",
    "Answer length limit (tokens):": "回答长度上限（token）：",
    "Language:": "语言：",
    "System language": "跟随系统语言",
    "A new language applies after a restart.": "新的语言将在重启后生效。",
    "Theme:": "主题：",
    "Follow the system": "跟随系统",
    "Light": "浅色",
    "Dark": "深色",
    "Copy every result to the clipboard": "自动将每个结果复制到剪贴板",
    "Global shortcut:": "全局快捷键：",
    "Bind this command to a key in your system's keyboard settings: it captures a region with the running app (works on Wayland too).": "在系统的键盘设置中为此命令绑定一个快捷键：它会让正在运行的应用截取区域（在 Wayland 上同样有效）。",
}

_TABLES = {"en": {}, "zh_CN": ZH_CN}
_language = "en"


def system_language() -> str:
    """zh_CN for a Chinese system locale, else English."""
    return "zh_CN" if QLocale.system().language() == QLocale.Language.Chinese else "en"


def set_language(code: str) -> str:
    """Use `code` ("en", "zh_CN"; "" for the system's); returns the language now in use."""
    global _language
    _language = code if code in _TABLES else system_language()
    return _language


def tr(text: str, **values: object) -> str:
    """`text` in the current language; `{name}` fields are filled from `values` after translation."""
    translated = _TABLES[_language].get(text, text)
    return translated.format(**values) if values else translated


def task_labels() -> dict[str, str]:
    """Task name -> what the UI calls it."""
    return {"ocr": tr("Text (OCR)"), "table": tr("Table"), "caption": tr("Caption"), "ask": tr("Ask a question"),
            "extract": tr("Extract fields")}


def install_qt_translations(app: QApplication) -> None:
    """Qt's own strings (dialog buttons, file pickers) in the current language, from Qt's shipped .qm files."""
    if _language == "en":
        return
    translator = QTranslator(app)
    if translator.load(f"qtbase_{_language}", QLibraryInfo.path(QLibraryInfo.LibraryPath.TranslationsPath)):
        app.installTranslator(translator)
