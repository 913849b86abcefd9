"""The UI's words: English in the code, Simplified Chinese here, one `tr()` for both.

Why not Qt's .ts/.qm files: they need lupdate/lrelease runs and a compiled binary in the repository for every
change of wording; one dictionary does the same for an app this size and a test keeps it complete (every
`tr("...")` literal in gui/ must have an entry). Qt's own dialogs (file pickers, standard buttons) use Qt's
shipped translations, loaded by `install_qt_translations`.

Call `tr()` when a widget is built, never at import time, so the language chosen at start-up applies. The
language is set once at start-up; the settings dialog says a change applies after a restart.
"""

from __future__ import annotations

import re

from PySide6.QtCore import QCoreApplication, QLibraryInfo, QLocale, QTranslator

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
    "Verified": "验证",
    "Then compare it with the checkpoint's reference (transformers, CPU)": "然后与检查点的参考实现对比（transformers，CPU）",
    "Comparing the converted model with the checkpoint's reference...": "正在将转换后的模型与检查点的参考实现对比…",
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
    "An image at this budget takes about {seconds} s to encode with Qwen2-VL-2B on a 2-core CPU (less on a GPU).":
        "此预算下的一张图像，用 Qwen2-VL-2B 在双核 CPU 上编码约需 {seconds} 秒（GPU 上更快）。",
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
    # menus (Qt's convention for Chinese mnemonics: the letter in brackets)
    "&File": "文件(&F)",
    "&Edit": "编辑(&E)",
    "&Task": "任务(&T)",
    "&Models": "模型(&M)",
    "&Help": "帮助(&H)",
    "&Open images...": "打开图片(&O)…",
    "Add &folder...": "添加文件夹(&F)…",
    "Capture &region": "截取区域(&R)",
    "Capture to &clipboard": "截取到剪贴板(&C)",
    "Capture &again": "再次截取(&A)",
    "&Export all...": "全部导出(&E)…",
    "&History": "历史记录(&H)",
    "C&lose window": "关闭窗口(&L)",
    "&Quit": "退出(&Q)",
    "&Copy result": "复制结果(&C)",
    "Copy for &spreadsheet": "复制到表格软件(&S)",
    "&Paste image": "粘贴图片(&P)",
    "&Settings...": "设置(&S)…",
    "&Run": "运行(&R)",
    "&Cancel": "取消(&C)",
    "&Manage models...": "管理模型(&M)…",
    "&Read me": "说明文档(&R)",
    "&About edgevl": "关于 edgevl(&A)",
    "&Images": "图片(&I)",
    "Tas&k:": "任务(&K)：",
    "Hi&story": "历史记录(&S)",
    "Mo&del:": "模型(&D)：",
    "La&yout:": "排列(&Y)：",
    "Results:": "结果：",
    "&Copy": "复制(&C)",
    # layout modes
    "Lines": "按行",
    "Paragraphs": "按段落",
    "Raw": "原始",
    "How the text is laid out: line by line, joined into paragraphs, or as the engine read it": "文字的排列方式：逐行、合并为段落，或保持引擎读出的原样",
    # results per task, batch, export
    "No {task} result for this image yet: press Run.": "这张图片还没有“{task}”结果：请点击“运行”。",
    "Waiting for its turn...": "排队等待中…",
    "Reading...": "正在识别…",
    "Reading {source}...": "正在识别 {source}…",
    "Cancelled before a result came.": "在得到结果之前已取消。",
    "{done} of {total}": "{done} / {total}",
    "No images in {folder}.": "{folder} 中没有图片。",
    "Add a folder of images": "添加图片文件夹",
    "{count} images in {folder}": "{folder} 中有 {count} 张图片",
    "{count} images read, {failed} failed; Export all saves them.": "已识别 {count} 张图片，{failed} 张失败；“全部导出”可保存结果。",
    "Export all": "全部导出",
    "Every result in the queue, folders included, in one file": "将队列中的所有结果（包括文件夹）保存到一个文件",
    "Nothing to export yet: read some images first.": "还没有可导出的内容：请先识别一些图片。",
    "Saved {file}": "已保存 {file}",
    "{task} needs a vision-language model. Add one in the model manager, then choose it as the model.": "“{task}”需要视觉语言模型。请在模型管理器中添加一个，然后将其选为模型。",
    "Open the model manager": "打开模型管理器",
    "Dismiss": "关闭提示",
    "(no text found)": "（未找到文字）",
    # tray, capture to clipboard, notifications
    "Capture to clipboard": "截取到剪贴板",
    "Capture failed": "截取失败",
    "edgevl keeps running": "edgevl 仍在运行",
    "Capture from the tray icon; quit from its menu.": "可通过托盘图标截取；在其菜单中退出。",
    "Drag over the text to read. Esc or right-click cancels.": "拖动框选要识别的文字。按 Esc 或右键取消。",
    # history view
    "Date": "日期",
    "Task": "任务",
    "Choose an entry to see its result.": "选择一条记录以查看其结果。",
    # help
    "Read me": "说明文档",
    "About edgevl": "关于 edgevl",
    "The README is not installed with this copy of edgevl.": "此 edgevl 安装中没有附带 README。",
    "On-device OCR, tables and captions.": "本地运行的文字识别、表格提取和图片描述。",
    "Engine in use:": "当前引擎：",
    "not loaded yet (loads on the first task): {model}": "尚未加载（首次运行任务时加载）：{model}",
    # model manager
    "No models yet. The built-in OCR engine reads text and tables without one. For captions, questions and harder pages, download a model (Download...), import GGUF files, or convert a Qwen2-VL or MiniCPM-V checkpoint below: q4_k_m is the smallest that keeps reading quality.": "还没有模型。内置 OCR 引擎无需模型即可识别文字和表格。如需图片描述、提问或处理更难的页面，请下载模型（“下载…”）、导入 GGUF 文件，或在下方转换 Qwen2-VL 或 MiniCPM-V 检查点：q4_k_m 是保持识别质量的最小量化级别。",
    "This installation of edgevl has no converter (the \u201cconvert\u201d extra). The README's \u201cGetting real checkpoints\u201d section shows how to add it.": "此 edgevl 安装不含转换器（“convert”附加组件）。README 的“Getting real checkpoints”一节说明了如何添加。",
    "The folder {folder} does not exist.": "文件夹 {folder} 不存在。",
    "{folder} is a file; choose the folder that holds config.json.": "{folder} 是一个文件；请选择包含 config.json 的文件夹。",
    "{model}: {size:.1f} GB of files, about {ram:.0f} GB of memory": "{model}：文件 {size:.1f} GB，约需 {ram:.0f} GB 内存",
    "more than this computer has ({ram:.0f} GB)": "超过本机内存（{ram:.0f} GB）",
    # settings
    "Copy the text of screen captures to the clipboard": "将截图识别出的文字复制到剪贴板",
    "Closing the window keeps edgevl running in the tray": "关闭窗口后 edgevl 继续在托盘中运行",
    "Bind this command to a key in your system's keyboard settings: the running app captures a region and puts its text on the clipboard (works on Wayland too).": "在系统的键盘设置中为此命令绑定一个快捷键：正在运行的应用会截取区域并将其文字放到剪贴板（在 Wayland 上同样有效）。",
    # model manager: downloading and importing models
    "Download...": "下载…",
    "Import GGUF...": "导入 GGUF…",
    "Download a model": "下载模型",
    "Download": "下载",
    "Memory needed": "所需内存",
    "Licence": "许可证",
    "Formats": "格式",
    "Downloads the {size:.1f} GB checkpoint from {repo}, then converts it to {files:.1f} GB of model files.": "从 {repo} 下载 {size:.1f} GB 的检查点，然后转换为 {files:.1f} GB 的模型文件。",
    "Downloads the {size:.1f} GB checkpoint from {repo}, then converts it.": "从 {repo} 下载 {size:.1f} GB 的检查点，然后进行转换。",
    "Needs about {ram:.1f} GB of memory{how}; this computer has {total:.1f} GB.": "需要约 {ram:.1f} GB 内存{how}；本机有 {total:.1f} GB。",
    "(estimated from the file sizes)": "（根据文件大小估算）",
    "Choose a model first.": "请先选择一个模型。",
    "Downloaded: {folder}": "已下载：{folder}",
    "Stopping...": "正在停止…",
    "Download stopped. Download it again to continue where it stopped.": "下载已停止。再次下载将从停止处继续。",
    "Downloading needs huggingface_hub: pip install 'edgevl[pull]'": "下载需要 huggingface_hub：pip install 'edgevl[pull]'",
    "Import GGUF files": "导入 GGUF 文件",
    "Language model .gguf (an Ollama blob works too)": "语言模型 .gguf（也可以是 Ollama 的 blob 文件）",
    "Or a folder holding both, as LM Studio keeps them:": "或选择同时包含两者的文件夹（LM Studio 的存放方式）：",
    "Choose a folder...": "选择文件夹…",
    "Vision projector (mmproj) .gguf; empty for a folder": "视觉投影器 (mmproj) .gguf；选择文件夹时留空",
    "Import": "导入",
    "Language model:": "语言模型：",
    "Vision projector:": "视觉投影器：",
    "File...": "文件…",
    "Language model GGUF": "语言模型 GGUF",
    "Vision projector GGUF": "视觉投影器 GGUF",
    "GGUF files (*.gguf);;All files (*)": "GGUF 文件 (*.gguf);;所有文件 (*)",
    "Folder of GGUF files": "GGUF 文件所在文件夹",
    "Choose the language model file or a folder first.": "请先选择语言模型文件或文件夹。",
    "Imported: {folder}": "已导入：{folder}",
    "Import cancelled.": "导入已取消。",
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


def layout_labels() -> dict[str, str]:
    """OCR layout mode (the library's `layout` option) -> what the UI calls it."""
    return {"auto": tr("Lines"), "paragraphs": tr("Paragraphs"), "raw": tr("Raw")}


def without_mnemonic(text: str) -> str:
    """Menu text for tool buttons, without mnemonic or the dots of "opens a dialog": "Open &images..." ->
    "Open images", "打开图片(&O)…" -> "打开图片"."""
    return re.sub(r"\(&\w\)", "", text).replace("&", "").removesuffix("...").removesuffix("\u2026")


def install_qt_translations(app: QCoreApplication) -> None:
    """Qt's own strings (dialog buttons, file pickers) in the current language, from Qt's shipped .qm files."""
    if _language == "en":
        return
    translator = QTranslator(app)
    if translator.load(f"qtbase_{_language}", QLibraryInfo.path(QLibraryInfo.LibraryPath.TranslationsPath)):
        app.installTranslator(translator)
